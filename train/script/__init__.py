"""Script mode: the user's own training code (`sagemaker_program`), run the way AWS's training toolkit runs it,
with the built-in path's guarantees around it. One concept per module:

- job.py          is this a script-mode job? its hyperparameters, split into the user's and the SDK's
- source.py       the user's code into /opt/ml/code: S3 or local tarball (safely), a directory, or already there
- environment.py  the SM_* variables and the `--key value` command line, in the toolkit's formats
- command.py      how the entry point runs: python, python -m, sh, or torchrun for distributed jobs
- process_tree.py every process the user's code started, to signal them all at once
- launcher.py     run it: stderr teed and kept, SIGTERM forwarded, the tree killed after a grace period
- failure.py      the failure file: the user's exception first, then the exit code and the command
- main.py         the job, start to end

Nothing here imports torch: the launcher only starts the user's code.
"""
