"""Extract llama-slot features (see `fec.commands.extract`; `-h` lists every option).

python llama2_rep_extract.py -device cuda -task ED -mode train
"""

import sys

from fec.commands.extract import main

if __name__ == "__main__":
    sys.exit(main("llama"))
