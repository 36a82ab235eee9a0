"""Debugger's built-in rules in the training loop: each one triggers on the problem it names and stays quiet
on a healthy run; a triggered rule logs once or fails the job; every verdict lands in rules.json."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optml.container.errors import UserError
from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.train.callbacks import Callback, Control
from optml.train.hyperparameters import DEFAULT_RULES, RULE_NAMES, Hyperparameters
from optml.train.interrupt import TrainingFailed
from optml.train.losses import LossFunction, per_row_loss
from optml.train.rules import RULES_FILE, RuleContext, TrainingRules, watched_tensors, watches_tensors
from optml.train.trainer import Objective, Split, Step, Trainer, TrainState
from tests.conftest import make_classification

OBJECTIVE = Objective(
    BINARY, LossFunction("bce", per_row_loss("bce", BINARY, huber_delta=1, focal_gamma=2, focal_alpha=0.25))
)
HEALTHY = Hyperparameters(epochs=4, batch_size=16, learning_rate=0.01, hidden_units=(8,))


def split(rows: int, seed: int, labels: np.ndarray | None = None) -> Split:
    data = make_classification(rows, 4, 2, seed=seed)
    targets = data[:, 0] if labels is None else labels
    return Split.from_arrays(data[:, 1:].astype(np.float32), targets.astype(np.int64))


TRAIN, VALIDATION = split(200, seed=1), split(100, seed=2)


def network(hidden: tuple[int, ...] = (8,), activation: str = "relu", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(NetworkSpec("mlp", (4,), 1, hidden_units=hidden, activation=activation))


def fit(
    tmp_path: Path,
    rules: Sequence[str],
    *,
    net: torch.nn.Module | None = None,
    hp: Hyperparameters = HEALTHY,
    train: Split = TRAIN,
    validation: Split | None = VALIDATION,
    parameters: Sequence[str] = (),
    action: str = "log",
    context: RuleContext | None = None,
    extra: Sequence[Callback] = (),
) -> dict[str, dict[str, Any]]:
    """Train with the rules; their verdicts from rules.json, by rule name."""
    context = context or RuleContext(BINARY, has_validation=validation is not None, class_counts=None)
    checker = TrainingRules(
        rules, parameters, action=action, context=context, output_file=tmp_path / RULES_FILE,
        failure_file=tmp_path / "failure", check_every=5,
    )  # fmt: skip
    try:
        Trainer(net or network(), train, validation, hp=hp, objective=OBJECTIVE, callbacks=[checker, *extra]).fit()
    finally:
        checker.close()
    return verdicts(tmp_path)


def verdicts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for rule in json.loads((tmp_path / RULES_FILE).read_text())["rules"]}


def scaled(net: torch.nn.Module, **scales: float) -> torch.nn.Module:
    """Multiply named parameters (`blocks_0_0_weight` for blocks.0.0.weight) by a factor, or set biases."""
    with torch.no_grad():
        for name, factor in scales.items():
            net.get_parameter(name.replace("_", ".")).mul_(factor)
    return net


def dead_relus() -> torch.nn.Module:
    net = network((8,))
    with torch.no_grad():
        net.get_parameter("blocks.0.0.bias").fill_(-100.0)  # every hidden unit is negative on every row
    return net


# --- each rule triggers on its problem ---

TINY_STEPS = Hyperparameters(epochs=3, batch_size=16, learning_rate=1e-12, hidden_units=(8,))
PROVOKED: dict[str, Callable[[], dict[str, Any]]] = {
    # sigmoid layers with tiny weights: the first layers' gradients are products of tiny factors
    "VanishingGradient": lambda: {
        "net": scaled(
            network((8, 8, 8, 8), "sigmoid"),
            blocks_1_0_weight=1e-3,
            blocks_2_0_weight=1e-3,
            blocks_3_0_weight=1e-3,
            head_weight=1e-3,
        ),
    },  # fmt: skip
    "ExplodingTensor": lambda: {"hp": Hyperparameters(epochs=2, batch_size=16, learning_rate=1e30, optimizer="sgd")},
    # nothing learns: the loss only wobbles (blocks of 3 steps, each against the one 9 steps earlier)
    "LossNotDecreasing": lambda: {"hp": TINY_STEPS, "parameters": ["LossNotDecreasing.num_steps=3"]},
    "Overfit": lambda: {
        "train": split(24, seed=3, labels=np.random.default_rng(0).integers(0, 2, 24)),
        "net": network((64, 64)),
        "hp": Hyperparameters(epochs=40, batch_size=8, learning_rate=0.01, hidden_units=(64, 64)),
    },
    "Overtraining": lambda: {"hp": Hyperparameters(epochs=7, batch_size=64, learning_rate=1e-12)},
    "ClassImbalance": lambda: {"context": RuleContext(BINARY, has_validation=True, class_counts=(190, 10))},
    "PoorWeightInitialization": lambda: {"net": scaled(network((8, 8)), blocks_1_0_weight=1e-3)},
    "DeadRelu": lambda: {"net": dead_relus()},
    "SaturatedActivation": lambda: {"net": scaled(network((8,), "tanh"), blocks_0_0_weight=1e3)},
    "WeightUpdateRatio": lambda: {"hp": TINY_STEPS},  # updates of 1e-12 against weights of ~0.3
}


@pytest.mark.parametrize("rule", sorted(PROVOKED))
def test_each_rule_triggers_on_its_problem(rule: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="optml.train.rules"):
        verdict = fit(tmp_path, [rule], **PROVOKED[rule]())[rule]
    assert verdict["status"] == "IssuesFound", verdict
    assert verdict["step"] >= 0 and verdict["epoch"] >= 1 and verdict["evidence"]  # step 0: before training
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"rule {rule} triggered at step {verdict['step']} (epoch {verdict['epoch']}): "
                        f"{verdict['evidence']}"]  # fmt: skip


# Shorter horizons, so that the rules get to judge within the healthy run's 4 epochs of 13 steps.
QUIET_PARAMETERS = {
    "LossNotDecreasing": ["LossNotDecreasing.num_steps=4"],
    "Overtraining": ["Overtraining.patience_train=2", "Overtraining.patience_validation=2"],
    "StalledTraining": ["StalledTraining.threshold=20"],
}


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_each_rule_is_quiet_on_a_healthy_run(rule: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = network((8, 8), "tanh") if rule == "SaturatedActivation" else network((8, 8))
    context = RuleContext(BINARY, has_validation=True, class_counts=(100, 100))
    parameters = QUIET_PARAMETERS.get(rule, [])
    with caplog.at_level(logging.WARNING, logger="optml.train.rules"):
        verdict = fit(tmp_path, [rule], net=net, context=context, parameters=parameters)[rule]
    assert verdict == {"name": rule, "parameters": verdict["parameters"], "status": "NoIssuesFound", "evaluated": True}
    assert not caplog.records


def test_exploding_tensor_names_the_non_finite_values(tmp_path: Path) -> None:
    verdict = fit(tmp_path, ["ExplodingTensor"], **PROVOKED["ExplodingTensor"]())["ExplodingTensor"]
    assert any(word in verdict["evidence"] for word in ("nan", "inf", "NaN", "infinity")), verdict


def test_class_imbalance_sees_a_mispredicted_class(tmp_path: Path) -> None:
    """Without class counts it judges the predictions: a rare class with random labels is always missed."""
    labels = (np.random.default_rng(0).random(200) < 0.15).astype(np.int64)
    verdict = fit(
        tmp_path, ["ClassImbalance"], train=split(200, seed=1, labels=labels), parameters=["ClassImbalance.samples=100"]
    )["ClassImbalance"]
    assert verdict["status"] == "IssuesFound"
    assert verdict["evidence"].startswith("class 1 is mispredicted in")


def test_class_imbalance_counts_the_sampled_rows_without_class_counts(tmp_path: Path) -> None:
    labels = (np.arange(200) % 20 == 0).astype(np.int64)  # 10 of 200
    verdict = fit(tmp_path, ["ClassImbalance"], train=split(200, seed=1, labels=labels))["ClassImbalance"]
    assert (verdict["status"], verdict["epoch"]) == ("IssuesFound", 1)
    assert verdict["evidence"] == (
        "class 0 has 190 of the sampled rows, class 1 10: more than threshold_imbalance=10 times"
    )


def test_stalled_training_fails_a_job_whose_step_never_comes(tmp_path: Path) -> None:
    """The watchdog fails the job itself (the loop is stuck): verdict, failure file, exit code 1."""
    exited: list[int] = []
    released = threading.Event()

    class Hang(Callback):
        def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
            if run.epoch == 1 and run.batches_done == 3:
                assert released.wait(timeout=60), "the watchdog never fired"

    def exit(code: int) -> None:
        exited.append(code)
        released.set()

    checker = TrainingRules(
        ["StalledTraining"], ["StalledTraining.threshold=0.2"], action="stop", output_file=tmp_path / RULES_FILE,
        failure_file=tmp_path / "failure", exit=exit,
    )  # fmt: skip
    try:
        Trainer(network(), TRAIN, None, hp=HEALTHY, objective=OBJECTIVE, callbacks=[checker, Hang()]).fit()
    finally:
        checker.close()
    assert exited == [1]
    failure = (tmp_path / "failure").read_text()
    assert failure.startswith("rule StalledTraining triggered at step 3 (epoch 1): no training step finished for ")
    assert failure.endswith("after step 3 (threshold 0.2 s); rule_action=stop")
    assert verdicts(tmp_path)["StalledTraining"]["status"] == "IssuesFound"


def test_a_fit_shorter_than_check_every_is_judged_at_each_epoch_end() -> None:
    checker = TrainingRules(["VanishingGradient"])  # check_every=50, one epoch of 13 steps
    hp = Hyperparameters(epochs=1, batch_size=16, hidden_units=(8, 8, 8, 8))
    Trainer(PROVOKED["VanishingGradient"]()["net"], TRAIN, None, hp=hp, objective=OBJECTIVE, callbacks=[checker]).fit()
    (vanishing,) = checker.report()["rules"]
    assert (vanishing["status"], vanishing["step"]) == ("IssuesFound", 13)


def test_early_stopping_keeps_working_with_rules_on(tmp_path: Path) -> None:
    """Rules judge, early stopping acts: an overfitting run stops early and Overfit records why."""
    setup = PROVOKED["Overfit"]()
    hp = Hyperparameters(epochs=40, batch_size=8, learning_rate=0.01, hidden_units=(64, 64), early_stopping_patience=2)
    checker = TrainingRules(["Overfit"], context=RuleContext(BINARY, has_validation=True), check_every=5)
    history = Trainer(setup["net"], setup["train"], VALIDATION, hp=hp, objective=OBJECTIVE, callbacks=[checker]).fit()
    assert history.stopped_early and len(history.epochs) < 40
    assert checker.report()["rules"][0]["status"] == "IssuesFound"


# --- rule_action=stop, the record, the parameters ---


def test_stop_fails_the_job_naming_rule_step_and_evidence_after_writing_rules_json(tmp_path: Path) -> None:
    with pytest.raises(TrainingFailed) as failed:
        fit(tmp_path, ["ExplodingTensor", "Overfit"], action="stop", **PROVOKED["ExplodingTensor"]())
    verdict = verdicts(tmp_path)["ExplodingTensor"]
    assert str(failed.value) == (
        f"rule ExplodingTensor triggered at step {verdict['step']} (epoch {verdict['epoch']}): "
        f"{verdict['evidence']}; rule_action=stop"
    )
    assert verdicts(tmp_path)["Overfit"]["status"] == "NoIssuesFound"


def test_a_rule_that_fails_before_training_fails_the_job_at_once(tmp_path: Path) -> None:
    """ClassImbalance judges the class counts before the first step: with stop, no step is trained."""
    steps: list[int] = []

    class Count(Callback):
        def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
            steps.append(run.batches_done)

    with pytest.raises(TrainingFailed, match=r"^rule ClassImbalance triggered at step 0 \(epoch 1\): class 0 has 190 "):
        fit(tmp_path, ["ClassImbalance"], action="stop", extra=[Count()], **PROVOKED["ClassImbalance"]())
    assert steps == []
    assert verdicts(tmp_path)["ClassImbalance"]["step"] == 0


def test_rules_json_records_every_rule_with_its_parameters(tmp_path: Path) -> None:
    fit(tmp_path, ["LossNotDecreasing", "Overfit"], validation=None, parameters=["LossNotDecreasing.num_steps=4"],
        hp=TINY_STEPS)  # fmt: skip
    report = json.loads((tmp_path / RULES_FILE).read_text())
    assert report["rule_action"] == "log" and report["steps"] == 3 * 13
    loss, overfit = report["rules"]
    assert loss["parameters"] == {"num_steps": 4, "diff_percent": 0.0, "mode": "train"}
    assert loss["status"] == "IssuesFound" and loss["step"] % 4 == 0 and loss["step"] >= 20
    assert overfit == {
        "name": "Overfit",
        "parameters": {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
        "status": "NoIssuesFound",
        "evaluated": False,
        "note": "not evaluated: no validation channel",
    }


def test_a_rule_that_triggered_stays_triggered_after_a_resume() -> None:
    checker = TrainingRules(["LossNotDecreasing"])
    checker.load_state_dict({"step": 40, "verdicts": {"LossNotDecreasing": {"step": 30, "epoch": 3, "evidence": "x"}}})
    rule = checker.report()["rules"][0]
    assert checker.report()["steps"] == 40
    assert (rule["status"], rule["step"], rule["epoch"], rule["evidence"]) == ("IssuesFound", 30, 3, "x")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (["Overfit.patient=3"], "rule_parameters: Overfit has no parameter 'patient'; its parameters: start_step "
                                "(default 0), patience (default 1), ratio_threshold (default 0.1)"),
        (["Overfit.patience=soon"], "rule_parameters: Overfit.patience='soon' is not valid: expected an integer >= 1"),
        (["Overfit.patience=0"], "rule_parameters: Overfit.patience='0' is not valid: expected an integer >= 1"),
        (["ExplodingTensor.only_nan=yes"], "ExplodingTensor.only_nan='yes' is not valid: expected true or false"),
        (["LossNotDecreasing.mode=eval"], "LossNotDecreasing.mode='eval' is not valid: expected train or validation"),
        (["DeadRelu.threshold_layer=50"], "rule_parameters sets 'DeadRelu.threshold_layer=50' but DeadRelu is not in "
                                          "rules (enabled: Overfit, ExplodingTensor, LossNotDecreasing)"),
    ],
)  # fmt: skip
def test_bad_rule_parameters_are_refused_before_training(parameters: list[str], message: str) -> None:
    hp = Hyperparameters(rules=("Overfit", "ExplodingTensor", "LossNotDecreasing"), rule_parameters=tuple(parameters))
    with pytest.raises(UserError) as refused:
        TrainingRules.from_hyperparameters(hp, context=RuleContext(), output_dir=None, failure_file=None)
    assert message in str(refused.value)


def test_parameters_override_the_defaults_and_none_means_no_callback() -> None:
    hp = Hyperparameters(rule_parameters=("ExplodingTensor.only_nan=true", "Overfit.ratio_threshold=0.25"))
    checker = TrainingRules.from_hyperparameters(hp, context=RuleContext(), output_dir=None, failure_file=None)
    assert checker is not None
    parameters = {rule["name"]: rule["parameters"] for rule in checker.report()["rules"]}
    assert list(parameters) == list(DEFAULT_RULES)
    assert parameters["ExplodingTensor"] == {"only_nan": True}
    assert parameters["Overfit"]["ratio_threshold"] == 0.25
    assert TrainingRules.from_hyperparameters(
        Hyperparameters(rules=()), context=RuleContext(), output_dir=None, failure_file=None
    ) is None  # fmt: skip


def test_which_rules_watch_weights_or_gradients() -> None:
    assert watches_tensors(["Overfit", "ExplodingTensor"])
    assert watches_tensors(["VanishingGradient"]) and watches_tensors(["WeightUpdateRatio"])
    assert not watches_tensors(["Overfit", "LossNotDecreasing", "ClassImbalance", "StalledTraining", "DeadRelu"])
    assert watched_tensors(DEFAULT_RULES) == {"weights", "gradients"}
    assert watched_tensors(["DeadRelu", "VanishingGradient"]) == {"activations", "gradients"}
    assert watched_tensors([]) == set()
