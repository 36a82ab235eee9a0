"""The `optml` command: takes the image somewhere — build it, push it, run training jobs, endpoints and batch
transform in AWS or in SageMaker local mode. It runs on the user's machine and is never copied into the image.
"""
