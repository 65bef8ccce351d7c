"""Pre-annotation runs: options, the annotator, runs on the job Redis, RQ jobs and the worker process."""
