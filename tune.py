"""Search the best fusion recipe of a task's stored features, then train it; test is read once, by
the final run.

    python tune.py --task ED                                 # after the extractions
    python tune.py --task mine --extract --preset offline    # extract the default search space first

See `fec.api.tune` (`fec.tune`; every option: `python tune.py -h`), `fec.classify.search` (the search) and
`fec.classify.candidates` (where candidates come from).
"""

import sys

from fec.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
