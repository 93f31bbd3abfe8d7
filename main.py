"""Train the fusion classifier on stored features and report test metrics (mean±std over seeds).

    python main.py -dataset ED                       # the published command line, one seed
    python main.py --task ED --runs 5                # seeds 0..4, as the paper's 5 runs
    python main.py --task ED --compat reference      # the published recipe, defects included

See `fec.api.train` (`fec.train`, every setting: `python main.py -h`) and `fec.classify.fusion_training` (the loop).
"""

import sys

from fec.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
