"""Put the emotion datasets into data/{task}/ (train.csv, valid.csv, test.csv, label2idx.txt).

    python prepare_data.py --from ../shared/data     # copy all known tasks found there
    python prepare_data.py                           # download ED and go_emotion (pinned, sha256-checked)

See `fec.cli.prepare_data` (every option: `python prepare_data.py -h`) and `fec.core.fetch`.
"""

import sys

from fec.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
