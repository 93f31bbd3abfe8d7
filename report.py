"""Pool the seeds of finished runs that share a recipe into one table row (markdown or CSV).

    python report.py --task ED

See `fec.cli.report` (every option: `python report.py -h`) and `fec.runs.report` (the pooling rule).
"""

import sys

from fec.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
