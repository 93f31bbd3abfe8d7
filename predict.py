"""Classify new text with a trained run: top-k labels with probabilities.

    python predict.py --run Logs/ED_20261122-101500 --text "I finally got the job!"

See `fec.cli.predict` (every option: `python predict.py -h`) and `fec.inference.classifier` (EmotionClassifier).
"""

import sys

from fec.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
