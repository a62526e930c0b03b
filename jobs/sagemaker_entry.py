"""SageMaker Processing entry point: `python3 /opt/ml/processing/code/jobs/sagemaker_entry.py …`

Created by `dfray sagemaker submit`, which uploads the dfray source next to this file
(/opt/ml/processing/code/dfray/). Scores this instance's shard of the corpus
(/opt/ml/processing/input/videos/, ShardedByS3Key) on a local Ray and ships its rows to
OUT/RUN_ID/ on S3 as they finish. See dfray/cloud/container.py.
"""

import os
import sys

# The uploaded source first: the job runs the submitter's code, not the image's dfray.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dfray.cloud.container import entry_parser, run_entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_entry(entry_parser().parse_args()))
