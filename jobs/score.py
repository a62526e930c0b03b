"""`ray job submit --working-dir . -- python jobs/score.py CORPUS --out OUT …`

A thin entry point over `dfray score`: same arguments, same code. Inside a Ray job the
driver finds the cluster through RAY_ADDRESS, which Ray sets for it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfray.commands.score import add_arguments, run  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="jobs/score.py", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
