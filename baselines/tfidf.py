"""TF-IDF + logistic regression: a text-only baseline to set beside the fusion classifier.

    python baselines/tfidf.py --task ED --runs 5

See `fec.cli.tfidf` (the options) and `fec.classify.tfidf` (the method).
"""

import sys

from fec.cli.tfidf import main

if __name__ == "__main__":
    sys.exit(main())
