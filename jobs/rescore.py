"""`ray job submit --working-dir . -- python jobs/rescore.py CACHE SUBMISSION... --out DIR …`

A thin entry point over `dfray rescore`: same arguments (`--budget` included), same code.
Inside a Ray job the driver finds the cluster through RAY_ADDRESS, which Ray sets for it;
each submission's scoring process joins the same cluster.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfray.cli import run_args  # noqa: E402
from dfray.commands.rescore import add_arguments, run  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="jobs/rescore.py", description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run, command="rescore")
    sys.exit(run_args(parser.parse_args()))
