"""Extract roberta-slot features (see `fec.cli.extract`; `-h` lists every option).

python roberta_rep_extract.py -device cuda -task ED -mode train
"""

import sys

from fec.cli.extract import main

if __name__ == "__main__":
    sys.exit(main("roberta"))
