"""The names the model format, training and the `optml` command share: tasks, network kinds, activations.

No torch here: the `optml` command checks hyperparameters on a laptop that has none (cli/).
"""

from __future__ import annotations

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)

TABULAR_MODELS = ("mlp",)
IMAGE_MODELS = ("cnn",)
SEQUENCE_MODELS = ("rnn", "lstm", "gru")
MODELS = TABULAR_MODELS + IMAGE_MODELS + SEQUENCE_MODELS
ACTIVATION_NAMES = ("relu", "leaky_relu", "tanh", "sigmoid")
