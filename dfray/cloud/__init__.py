"""Managed-cloud launchers over the same scoring code (SageMaker Processing, …).

Each module here turns a run into a managed job and ships the dfray source with it; the
job's container calls `dfray.runner.run_scoring` like `dfray score` does. Heavy imports
(boto3, pyarrow, ray, torch) stay inside functions.
"""
