"""Explain a prediction: which words pushed the model towards a label (SHAP over the full pipeline).

    python explain.py --run Logs/ED_20261122-101500 --text "I was so scared walking home alone last night"

See `fec.cli.explain` (every option: `python explain.py -h`) and `fec.inference.explanations`.
"""

import sys

from fec.cli.explain import main

if __name__ == "__main__":
    sys.exit(main())
