"""Pool the seeds of finished runs that share a recipe into one table row (markdown or CSV).

    python report.py --task ED

See `fec.commands.report` (every option: `python report.py -h`) and `fec.report` (the pooling rule).
"""

import sys

from fec.commands.report import main

if __name__ == "__main__":
    sys.exit(main())
