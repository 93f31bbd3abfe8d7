"""TF-IDF + logistic regression: a text-only baseline to set beside the fusion classifier.

    python baselines/tfidf.py --task ED --runs 5

See `fec.commands.tfidf` (the options) and `fec.tfidf` (the method).
"""

import sys

from fec.commands.tfidf import main

if __name__ == "__main__":
    sys.exit(main())
