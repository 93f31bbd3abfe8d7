"""Put the emotion datasets into data/{task}/ (train.csv, valid.csv, test.csv, label2idx.txt).

    python prepare_data.py --from ../shared/data     # copy all known tasks found there
    python prepare_data.py                           # download ED and go_emotion (pinned, sha256-checked)

See `fec.commands.prepare_data` (every option: `python prepare_data.py -h`) and `fec.fetch`.
"""

import sys

from fec.commands.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
