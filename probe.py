"""Linear probes of every stored feature of a task: which slot, pooling and layer carry the emotion.

    python probe.py --task ED

See `fec.cli.probe` (every option: `python probe.py -h`) and `fec.classify.probing`.
"""

import sys

from fec.cli.probe import main

if __name__ == "__main__":
    sys.exit(main())
