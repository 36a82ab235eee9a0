"""Training: `docker run IMAGE train`. One concept per module:

- hyperparameters.py  every knob, typed, validated, with its default
- data.py             channels → feature/label arrays (CSV via pyarrow)
- metrics.py          the evaluation metrics logged per epoch
- trainer.py          the training loop: mini-batches, loss, optimizer
- main.py             the job: config → data → fit → save model / failure
"""
