"""`ray job submit --working-dir . -- python jobs/score.py CORPUS --out OUT …`

A thin entry point over `dfray score`: same arguments, same code. Inside a Ray job the
driver finds the cluster through RAY_ADDRESS, which Ray sets for it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfray.cli import run_args  # noqa: E402
from dfray.commands.score import add_arguments, run  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="jobs/score.py", description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run, command="score")
    sys.exit(run_args(parser.parse_args()))
