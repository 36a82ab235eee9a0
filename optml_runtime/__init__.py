"""Helpers for your own training script in the optml image (script mode): the built-in trainer's guarantees
in a few lines. Imports without torch; install it on a laptop with `pip install optml`.

    import optml_runtime as rt

    stop = rt.install_stop_handler()                # SIGTERM/SIGINT raise a flag instead of killing
    restored = rt.load_latest_checkpoint()           # newest readable checkpoint of this host/rank, or None
    start = restored.step + 1 if restored else 0
    for epoch in range(start, epochs):
        ...
        rt.log_metrics({"train:loss": loss, "validation:accuracy": acc}, epoch=epoch)
        rt.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, step=epoch)
        if stop:                                     # a stop: the checkpoint above is what the next run resumes
            break

The import name cannot collide with the `optml` package or with a user's train.py / model.py.
"""

from __future__ import annotations

from optml.container.logs import metric_definitions
from optml_runtime.checkpoints import Checkpoint, checkpoint_dir, load_latest_checkpoint, save_checkpoint
from optml_runtime.metrics import is_master, log_metrics
from optml_runtime.stop import StopFlag, install_stop_handler, stop_requested

__all__ = [
    "Checkpoint",
    "StopFlag",
    "checkpoint_dir",
    "install_stop_handler",
    "is_master",
    "load_latest_checkpoint",
    "log_metrics",
    "metric_definitions",
    "save_checkpoint",
    "stop_requested",
]
