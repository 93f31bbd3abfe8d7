"""Extract bert-slot features (see `fec.commands.extract`; `-h` lists every option).

python bert_rep_extract.py -device cuda -task ED -mode train
"""

import sys

from fec.commands.extract import main

if __name__ == "__main__":
    sys.exit(main("bert"))
