"""The SageMaker /opt/ml container contract, shared by `train` and `serve`.

Every fact of the contract (paths, configuration files, failure reporting, log format, the saved-model
format) lives in exactly one module here. Nothing in this package reads the environment at import time:
callers resolve it once, in their `main()`, and pass the result down.
"""
