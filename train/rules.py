"""SageMaker Debugger's built-in rules, checked inside the training loop instead of in a separate rule job.

Debugger saves tensors every few hundred steps and a processing job reads them back; here the rules read the
live values from a training callback (train/callbacks.py), so they cost no storage and a triggered rule can
stop the job at once. `TrainingRules` is that callback: it runs the rules named by the `rules`
hyperparameter with Debugger's parameter names and defaults (overridden by `rule_parameters`), logs a
warning or fails the job (`rule_action`), and records every rule's verdict in rules.json with Debugger's
RuleEvaluationStatus names (IssuesFound / NoIssuesFound). Debugger's parameters that pick saved tensors
(collection_names, tensor_regex, the *_regex ones, use_losses_collection) mean nothing here — the rules read
the network itself — and are refused as unknown.

Steps and epochs. A step is one mini-batch, counted over the whole fit from 1 (checkpoints carry the count).
optml validates once per epoch, so the rules that compare training with validation (Overfit, Overtraining,
LossNotDecreasing with mode=validation) count in epochs where Debugger counts steps. The per-step rules
are cheap: a step only appends its loss to a list; every `check_every` steps (and at each epoch's end)
they look at the losses, weights and gradients with one device sync per rule. The activation rules watch
the ReLU/Tanh/Sigmoid modules through forward hooks armed for one training step per check only.

Several processes. Each process checks its own values; weights and gradients (summed across processes) and
the epoch metrics are the same on every process, the per-step losses, activations and predictions are the
process's own rows. A rule that stops the job on any process fails every process (Control.fail).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from optml.container.errors import UserError
from optml.container.failure import write_failure
from optml.container.files import atomic_write
from optml.container.kinds import MULTICLASS, REGRESSION
from optml.train.callbacks import Callback, Control
from optml.train.hyperparameters import RULE_NAMES, Hyperparameters
from optml.train.interrupt import TrainingFailed

if TYPE_CHECKING:
    from optml.train.trainer import Step, TrainState

log = logging.getLogger(__name__)

RULES_FILE = "rules.json"
ISSUES_FOUND = "IssuesFound"  # Debugger's RuleEvaluationStatus values
NO_ISSUES_FOUND = "NoIssuesFound"
CHECK_EVERY = 50  # steps between two looks at losses, weights and gradients (Debugger saves every 500)
WEIGHTS, GRADIENTS, ACTIVATIONS = "weights", "gradients", "activations"


# --- parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One rule parameter: Debugger's name and default; the value's type is the default's."""

    name: str
    default: float | int | bool | str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive

    def parse(self, text: str) -> float | int | bool | str:
        """The value of `text`; ValueError when it is not one."""
        text = text.strip()
        if isinstance(self.default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if self.choices:
            if text.lower() not in self.choices:
                raise ValueError
            return text.lower()
        value = int(text) if isinstance(self.default, int) else float(text)
        if not math.isfinite(value) or (self.minimum is not None and value < self.minimum):
            raise ValueError
        return value

    def expected(self) -> str:
        if isinstance(self.default, bool):
            return "true or false"
        if self.choices:
            return " or ".join(self.choices)
        kind = "an integer" if isinstance(self.default, int) else "a number"
        return kind if self.minimum is None else f"{kind} >= {self.minimum:g}"

    def describe(self) -> str:
        return f"{self.name} (default {self.default})"


@dataclass(frozen=True)
class Finding:
    """Where a rule triggered and why."""

    step: int
    epoch: int
    evidence: str


@dataclass
class StepWindow:
    """What a step rule sees at a check: the losses of the steps since the last check (this process's own
    rows; a skipped step has none) and their step numbers."""

    losses: torch.Tensor
    loss_steps: list[int]
    step: int  # the step just done
    epoch: int
    trained: bool  # the optimizer stepped in that step (a short batch-norm batch is skipped)


class Rule:
    """A Debugger rule. Override the hooks you need; each returns a Finding when the rule triggers."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]]
    watches: ClassVar[frozenset[str]] = frozenset()
    per_epoch: ClassVar[bool] = False  # checked at epoch ends only, not every few steps
    first_steps: ClassVar[bool] = False  # watches every step from the start, checked once after `steps`

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        self.values = values
        self.context = context
        self.note: str | None = None  # why the rule could not be evaluated, if it could not

    def start(self, run: TrainState) -> Finding | None:
        return None

    def prepare(self, run: TrainState, step: int) -> None:
        """The next step is checked: get ready to watch it (arm hooks, copy weights)."""

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        return None

    def epoch_end(self, run: TrainState, metrics: dict[str, float]) -> Finding | None:
        return None


@dataclass(frozen=True)
class RuleContext:
    """What the job knows before training that some rules need."""

    task: str = "binary"
    has_validation: bool = False
    class_counts: tuple[int, ...] | None = None  # rows per class of the train channel (ClassImbalance)


def parameter_values(rule: type[Rule], items: Iterable[str]) -> dict[str, Any]:
    """The rule's parameters: defaults, overridden by `Rule.parameter=value` items naming this rule."""
    by_name = {parameter.name: parameter for parameter in rule.parameters}
    values: dict[str, Any] = {parameter.name: parameter.default for parameter in rule.parameters}
    for item in items:
        key, _, text = item.partition("=")
        rule_name, _, name = key.partition(".")
        if rule_name != rule.name:
            continue
        parameter = by_name.get(name)
        listed = ", ".join(p.describe() for p in rule.parameters)
        if parameter is None:
            raise UserError(f"rule_parameters: {rule.name} has no parameter {name!r}; its parameters: {listed}")
        try:
            values[name] = parameter.parse(text)
        except ValueError:
            raise UserError(
                f"rule_parameters: {rule.name}.{name}={text!r} is not valid: expected {parameter.expected()}"
            ) from None
    return values


def check_rule_parameters(rules: Sequence[str], items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every enabled rule's parameter values; UserError for a parameter of an unknown or disabled rule, an
    unknown parameter name or a bad value (before any data is read)."""
    items = list(items)
    for item in items:
        rule_name = item.partition(".")[0]
        if rule_name not in rules:
            enabled = ", ".join(rules) or "none"
            raise UserError(f"rule_parameters sets {item!r} but {rule_name} is not in rules (enabled: {enabled})")
    return {name: parameter_values(RULES[name], items) for name in rules}


def watched_tensors(rule_names: Iterable[str]) -> frozenset[str]:
    """What the rules read of the network: "weights", "gradients" and/or "activations"."""
    return frozenset().union(*(RULES[name].watches for name in rule_names))


def watches_tensors(rule_names: Iterable[str]) -> bool:
    """True when one of the rules reads weights or gradients: TensorBoard then writes their histograms."""
    return bool(watched_tensors(rule_names) & {WEIGHTS, GRADIENTS})


# --- helpers that read the network -----------------------------------------------------------------------


def trainable(network: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in network.named_parameters() if p.requires_grad]


def gradients(network: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p.grad) for name, p in trainable(network) if p.grad is not None]


def first_over(values: list[float], names: list[str], bad: Callable[[float], bool]) -> tuple[str, float] | None:
    for name, value in zip(names, values, strict=True):
        if bad(value):
            return name, value
    return None


# --- the rules -------------------------------------------------------------------------------------------


class VanishingGradient(Rule):
    """The mean absolute gradient of some parameter tensor fell below `threshold`."""

    name = "VanishingGradient"
    parameters = (Parameter("threshold", 1e-7, "mean |gradient| below which a gradient vanishes", minimum=0.0),)
    watches = frozenset({GRADIENTS})

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        named = gradients(run.network)
        if not named or not window.trained:
            return None
        sums = torch.stack(torch._foreach_norm([g for _, g in named], 1)).double().cpu()
        means = (sums / torch.tensor([g.numel() for _, g in named], dtype=torch.float64)).tolist()
        found = first_over(means, [n for n, _ in named], lambda v: v < self.values["threshold"])
        if found is None:
            return None
        return Finding(
            window.step,
            window.epoch,
            f"mean |gradient| of {found[0]} is {found[1]:.3g} < threshold {self.values['threshold']:g}",
        )


class ExplodingTensor(Rule):
    """NaN (or infinity, unless only_nan) in the loss, the weights or the gradients."""

    name = "ExplodingTensor"
    parameters = (Parameter("only_nan", False, "watch for NaN only, not infinity"),)
    watches = frozenset({WEIGHTS, GRADIENTS})

    def bad(self, value: float) -> bool:
        return math.isnan(value) or (not self.values["only_nan"] and math.isinf(value))

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        losses = window.losses.detach().double().cpu().tolist()
        found = first_over(losses, [str(s) for s in window.loss_steps], self.bad)
        if found is not None:
            return Finding(int(found[0]), window.epoch, f"the training loss is {found[1]} at step {found[0]}")
        named = [(f"weights {n}", p.detach()) for n, p in trainable(run.network)]
        named += [(f"gradients {n}", g) for n, g in gradients(run.network)]
        if not named:
            return None
        largest = torch.stack(torch._foreach_norm([t for _, t in named], math.inf)).cpu().tolist()
        found = first_over(largest, [n for n, _ in named], self.bad)
        if found is None:
            return None
        kind = "NaN" if math.isnan(found[1]) else "infinity"
        return Finding(window.step, window.epoch, f"the {found[0]} contain {kind}")


class LossNotDecreasing(Rule):
    """The loss stopped going down. mode=train: the training loss is averaged over blocks of `num_steps`
    steps (one mini-batch's loss is too noisy to compare), and each block is compared with the block
    `num_steps` blocks earlier; the rule triggers when it is not lower by `diff_percent` %. Debugger
    compares single losses saved every 500 steps by default; comparing neighbouring blocks instead fires on
    the noise of healthy runs still improving. mode=validation: the validation loss of each epoch against
    the one `num_steps` epochs earlier (optml validates once per epoch)."""

    name = "LossNotDecreasing"
    parameters = (
        Parameter("num_steps", 10, "steps per averaged block, and blocks (epochs for mode=validation) between "
                  "the compared ones", minimum=1),
        Parameter("diff_percent", 0.0, "percent by which the loss must go down", minimum=0.0),
        Parameter("mode", "train", "which loss: train (per step) or validation (per epoch)", ("train", "validation")),
    )  # fmt: skip

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        super().__init__(values, context)
        self.carry = torch.empty(0, dtype=torch.float64)
        self.carry_steps: list[int] = []
        self.means: list[float] = []  # the latest blocks' means, num_steps + 1 of them at most
        self.per_validation = values["mode"] == "validation"
        if self.per_validation and not context.has_validation:
            self.note = "not evaluated: mode=validation needs a validation channel"

    def not_lower(self, value: float, before: float) -> bool:
        return not value < before * (1 - self.values["diff_percent"] / 100)

    def by(self) -> str:
        return f"{self.values['diff_percent']:g}% " if self.values["diff_percent"] else ""

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        if self.per_validation:
            return None
        size = self.values["num_steps"]
        self.carry = torch.cat([self.carry, window.losses.detach().double().cpu()])
        self.carry_steps += window.loss_steps
        whole = len(self.carry_steps) // size * size
        means = self.carry[:whole].view(-1, size).mean(1).tolist() if whole else []
        steps = self.carry_steps[size - 1 : whole : size]
        self.carry, self.carry_steps = self.carry[whole:], self.carry_steps[whole:]
        for mean, step in zip(means, steps, strict=True):
            self.means = [*self.means[-size:], mean]
            if len(self.means) > size and self.not_lower(mean, self.means[0]):
                earlier = step - size * size
                evidence = (
                    f"the mean training loss of steps {step - size + 1}-{step} is {mean:.6g}, not {self.by()}below "
                    f"{self.means[0]:.6g} of steps {earlier - size + 1}-{earlier}"
                )
                return Finding(step, window.epoch, evidence)
        return None

    def epoch_end(self, run: TrainState, metrics: dict[str, float]) -> Finding | None:
        epochs = run.history.epochs
        size = self.values["num_steps"]
        if not self.per_validation or len(epochs) <= size or "validation:loss" not in metrics:
            return None
        value, before = metrics["validation:loss"], epochs[-1 - size]["validation:loss"]
        if not self.not_lower(value, before):
            return None
        evidence = (
            f"validation loss {value:.6g} at epoch {run.epoch} is not {self.by()}below "
            f"{before:.6g} at epoch {run.epoch - size}"
        )
        return Finding(0, run.epoch, evidence)


class Overfit(Rule):
    """Validation loss rising while the training loss falls. Epoch by epoch (optml validates once per epoch,
    so Debugger's steps are epochs here): from epoch `start_step` on, an epoch overfits when its validation
    loss rose, its training loss fell, and (validation - training) / training exceeds `ratio_threshold`;
    the rule triggers after `patience` such epochs in a row."""

    name = "Overfit"
    parameters = (
        Parameter("start_step", 0, "first epoch to check", minimum=0),
        Parameter("patience", 1, "overfitting epochs in a row before the rule triggers", minimum=1),
        Parameter("ratio_threshold", 0.1, "largest (validation - train) / train loss gap allowed", minimum=0.0),
    )
    per_epoch = True

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        super().__init__(values, context)
        if not context.has_validation:
            self.note = "not evaluated: no validation channel"

    def overfits(self, now: dict[str, float], before: dict[str, float]) -> bool:
        train, validation = now["train:loss"], now["validation:loss"]
        gap = (validation - train) / max(abs(train), 1e-12)
        rising = validation > before["validation:loss"] and train < before["train:loss"]
        return rising and gap > self.values["ratio_threshold"]

    def epoch_end(self, run: TrainState, metrics: dict[str, float]) -> Finding | None:
        epochs = run.history.epochs
        patience = self.values["patience"]
        if "validation:loss" not in metrics or run.epoch < self.values["start_step"] or len(epochs) <= patience:
            return None
        recent = range(len(epochs) - patience, len(epochs))
        if not all(self.overfits(epochs[i], epochs[i - 1]) for i in recent):
            return None
        first = epochs[len(epochs) - patience - 1]
        evidence = (
            f"over the last {patience} epoch(s) the validation loss rose {first['validation:loss']:.6g} -> "
            f"{metrics['validation:loss']:.6g} while the training loss fell {first['train:loss']:.6g} -> "
            f"{metrics['train:loss']:.6g} (gap ratio above {self.values['ratio_threshold']:g})"
        )
        return Finding(0, run.epoch, evidence)


class Overtraining(Rule):
    """Training went on without improving: the training loss has not improved by `delta` for
    `patience_train` epochs, or the validation loss for `patience_validation` epochs (epochs, not steps:
    optml validates once per epoch)."""

    name = "Overtraining"
    parameters = (
        Parameter("patience_train", 5, "epochs without a training-loss improvement", minimum=1),
        Parameter("patience_validation", 10, "epochs without a validation-loss improvement", minimum=1),
        Parameter("delta", 0.01, "smallest decrease that counts as an improvement", minimum=0.0),
    )
    per_epoch = True

    def stale(self, losses: list[float], patience: int) -> tuple[float, float] | None:
        """(best before, best since) when the last `patience` values did not improve on the earlier best."""
        if len(losses) <= patience:
            return None
        before, since = min(losses[:-patience]), min(losses[-patience:])
        return (before, since) if since > before - self.values["delta"] else None

    def epoch_end(self, run: TrainState, metrics: dict[str, float]) -> Finding | None:
        epochs = run.history.epochs
        for key, patience in (("train", "patience_train"), ("validation", "patience_validation")):
            losses = [epoch[f"{key}:loss"] for epoch in epochs if f"{key}:loss" in epoch]
            stale = self.stale(losses, self.values[patience])
            if stale is not None:
                evidence = (
                    f"the {key} loss has not improved by {self.values['delta']:g} for {self.values[patience]} "
                    f"epochs (best {stale[1]:.6g} since, {stale[0]:.6g} before)"
                )
                return Finding(0, run.epoch, evidence)
        return None


class ClassImbalance(Rule):
    """The largest class has more than `threshold_imbalance` times the rows of the smallest (judged before
    training from the train channel's class counts, or without them on the first epoch's sampled rows), or
    some class is mispredicted more often than `threshold_misprediction` (judged at epoch ends on the
    epochs' sampled training predictions, once `samples` rows have been seen, from the second epoch on: the
    first epoch's predictions are those of a network still learning from its random start, and a class
    missed by them says nothing). Classification only."""

    name = "ClassImbalance"
    parameters = (
        Parameter("threshold_imbalance", 10.0, "largest / smallest class size allowed", minimum=1.0),
        Parameter("threshold_misprediction", 0.7, "largest misprediction rate allowed per class", minimum=0.0),
        Parameter("samples", 500, "rows to see before the misprediction rates are judged", minimum=1),
    )
    per_epoch = True

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        super().__init__(values, context)
        self.wrong: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.counted = context.class_counts is not None
        if context.task == REGRESSION:
            self.note = "not evaluated: regression has no classes"

    def imbalance(self, counts: Sequence[int], epoch: int, where: str) -> Finding | None:
        counts = list(counts)
        if len(counts) < 2:
            return None
        largest, smallest = max(counts), min(counts)
        if largest <= self.values["threshold_imbalance"] * smallest:
            return None
        evidence = (
            f"class {counts.index(largest)} has {largest} {where}, class {counts.index(smallest)} {smallest}: "
            f"more than threshold_imbalance={self.values['threshold_imbalance']:g} times"
        )
        return Finding(0, epoch, evidence)

    def start(self, run: TrainState) -> Finding | None:
        counts = self.context.class_counts
        return self.imbalance(counts, run.epoch, "rows") if counts and self.note is None else None

    def epoch_end(self, run: TrainState, metrics: dict[str, float]) -> Finding | None:
        if not run.outputs_seen:
            return None
        outputs, targets = torch.cat(run.outputs_seen).float(), torch.cat(run.targets_seen).long()
        predicted = outputs.argmax(1) if self.context.task == MULTICLASS else (outputs.reshape(-1) > 0).long()
        classes = max(int(max(targets.max().item(), predicted.max().item())) + 1, len(self.context.class_counts or ()))
        seen = torch.bincount(targets, minlength=classes).double()
        if not self.counted:
            self.counted = True
            found = self.imbalance([int(c) for c in seen.tolist()], run.epoch, "of the sampled rows")
            if found is not None:
                return found
        if run.epoch == 1:
            return None
        wrong = torch.bincount(targets[predicted != targets], minlength=classes).double()
        self.seen = seen if self.seen is None else _padded_sum(self.seen, seen)
        self.wrong = wrong if self.wrong is None else _padded_sum(self.wrong, wrong)
        return self.misprediction(run.epoch)

    def misprediction(self, epoch: int) -> Finding | None:
        assert self.seen is not None and self.wrong is not None
        if self.seen.sum() < self.values["samples"]:
            return None
        rates = (self.wrong / self.seen.clamp(min=1)).tolist()
        seen_rows, self.seen, self.wrong = self.seen.tolist(), None, None
        worst = max(range(len(rates)), key=lambda c: rates[c])
        if rates[worst] <= self.values["threshold_misprediction"]:
            return None
        evidence = (
            f"class {worst} is mispredicted in {rates[worst]:.0%} of {int(seen_rows[worst])} sampled training rows "
            f"(threshold_misprediction={self.values['threshold_misprediction']:g})"
        )
        return Finding(0, epoch, evidence)


def _padded_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(len(a), len(b))
    return nn.functional.pad(a, (0, size - len(a))) + nn.functional.pad(b, (0, size - len(b)))


class ActivationRule(Rule):
    """A rule that reads the inputs or outputs of activation modules through forward hooks, armed only for
    the steps it samples (one per check): a hook on every step would cost every forward pass."""

    modules: ClassVar[tuple[type[nn.Module], ...]]
    watches = frozenset({ACTIVATIONS})

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        super().__init__(values, context)
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def prepare(self, run: TrainState, step: int) -> None:
        self.arm(run.network)

    def arm(self, network: nn.Module) -> None:
        if self.handles:
            return
        for name, module in network.named_modules():
            if isinstance(module, self.modules):
                self.handles.append(module.register_forward_hook(self.hook(name or type(module).__name__)))
        if not self.handles and self.note is None:
            self.note = "not evaluated: the network has no " + " / ".join(m.__name__ for m in self.modules)

    def disarm(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def measure(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if module.training and inputs and isinstance(inputs[0], torch.Tensor):  # not the evaluation
                with torch.no_grad():
                    self.samples.setdefault(name, []).append(self.measure(module, inputs[0], output))

        return measure

    def measure(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def taken(self) -> dict[str, list[float]]:
        """The samples since the last call, on the CPU (one sync), per module."""
        names = list(self.samples)
        values = torch.stack([torch.stack(self.samples[n]).float().mean(0) for n in names]) if names else None
        self.samples = {}
        return dict(zip(names, values.cpu().tolist(), strict=True)) if values is not None else {}


def unit_share(flags: torch.Tensor) -> torch.Tensor:
    """Per unit (feature, or channel of an image), the fraction of its values that are set."""
    values = flags.float()
    return values.mean(0) if values.dim() <= 2 else values.transpose(0, 1).reshape(values.shape[1], -1).mean(1)


class InactiveUnitsRule(ActivationRule):
    """Debugger's layer test on inactive units: a unit is inactive when it is `active` for under
    `threshold_inactivity` % of a sampled batch's rows, and a layer triggers the rule when over
    `threshold_layer` % of its units are inactive. Subclasses say what "active" means and word the evidence."""

    def active(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evidence(self, name: str, inactive: float) -> str:
        raise NotImplementedError

    def measure(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        inactive = unit_share(self.active(module, inputs, output)) * 100 < self.values["threshold_inactivity"]
        return inactive.float().mean().reshape(1) * 100

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        for name, (inactive,) in self.taken().items():
            if inactive > self.values["threshold_layer"]:
                return Finding(window.step, window.epoch, self.evidence(name, inactive))
        return None


class DeadRelu(InactiveUnitsRule):
    """Too many ReLU units never fire: a unit is dead when it is active (> 0) for under
    `threshold_inactivity` % of a sampled batch's rows, a layer when over `threshold_layer` % of its units
    are dead."""

    name = "DeadRelu"
    parameters = (
        Parameter("threshold_inactivity", 1.0, "percent of activity below which a unit is dead", minimum=0.0),
        Parameter("threshold_layer", 50.0, "percent of dead units that makes a layer dead", minimum=0.0),
    )
    modules = (nn.ReLU,)

    def active(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output > 0

    def evidence(self, name: str, inactive: float) -> str:
        return (
            f"{inactive:.0f}% of the units of {name} are active for under "
            f"{self.values['threshold_inactivity']:g}% of a sampled batch (threshold_layer="
            f"{self.values['threshold_layer']:g})"
        )


class SaturatedActivation(InactiveUnitsRule):
    """Too many tanh or sigmoid units sit where the function is flat (its gradient vanishes): a unit is
    saturated when its input is inside [threshold_tanh_min, threshold_tanh_max] (or the sigmoid's range) for
    under `threshold_inactivity` % of a sampled batch's rows, a layer when over `threshold_layer` % of its
    units are (Debugger's definition)."""

    name = "SaturatedActivation"
    parameters = (
        Parameter("threshold_tanh_min", -9.4999, "tanh inputs below this are saturated"),
        Parameter("threshold_tanh_max", 9.4999, "tanh inputs above this are saturated"),
        Parameter("threshold_sigmoid_min", -23.0, "sigmoid inputs below this are saturated"),
        Parameter("threshold_sigmoid_max", 16.99999, "sigmoid inputs above this are saturated"),
        Parameter("threshold_inactivity", 1.0, "percent of activity below which a unit is saturated", minimum=0.0),
        Parameter("threshold_layer", 50.0, "percent of saturated units that makes a layer saturated", minimum=0.0),
    )
    modules = (nn.Tanh, nn.Sigmoid)

    def active(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        kind = "tanh" if isinstance(module, nn.Tanh) else "sigmoid"
        return (inputs >= self.values[f"threshold_{kind}_min"]) & (inputs <= self.values[f"threshold_{kind}_max"])

    def evidence(self, name: str, inactive: float) -> str:
        return (
            f"{inactive:.0f}% of the units of {name} are outside their function's working range for"
            f" over {100 - self.values['threshold_inactivity']:g}% of a sampled batch"
            f" (threshold_layer={self.values['threshold_layer']:g})"
        )


class PoorWeightInitialization(ActivationRule):
    """Badly scaled initial weights, judged on the first `steps` steps: the variances of the activations'
    inputs differ across layers by more than `threshold` times, or the gradients' 5th-95th percentile range
    is under `distribution_range`."""

    name = "PoorWeightInitialization"
    parameters = (
        Parameter("threshold", 10.0, "largest / smallest layer input variance allowed", minimum=1.0),
        Parameter("distribution_range", 0.001, "smallest 5th-95th percentile range of the gradients", minimum=0.0),
        Parameter("steps", 10, "first steps to judge", minimum=1),
    )
    modules = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
    watches = frozenset({ACTIVATIONS, GRADIENTS})
    first_steps = True
    GRADIENT_SAMPLE = 1_000_000  # gradient values the percentiles read at most

    def measure(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return inputs.detach().float().var().reshape(1)

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        self.disarm()
        variances = {name: value for name, (value,) in self.taken().items()}
        if len(variances) >= 2:
            low, high = min(variances, key=variances.__getitem__), max(variances, key=variances.__getitem__)
            if variances[high] > self.values["threshold"] * max(variances[low], 1e-30):
                evidence = (
                    f"over the first {window.step} steps the input variance of {high} ({variances[high]:.3g}) is "
                    f"more than {self.values['threshold']:g} times that of {low} ({variances[low]:.3g})"
                )
                return Finding(window.step, window.epoch, evidence)
        return self.gradient_range(run, window)

    def gradient_range(self, run: TrainState, window: StepWindow) -> Finding | None:
        named = gradients(run.network)
        if not named:
            return None
        values = torch.cat([g.detach().flatten().float() for _, g in named])
        values = values[:: max(1, len(values) // self.GRADIENT_SAMPLE)]
        low, high = torch.quantile(values.cpu(), torch.tensor([0.05, 0.95])).tolist()
        if high - low >= self.values["distribution_range"]:
            return None
        evidence = (
            f"the gradients' 5th-95th percentile range at step {window.step} is {high - low:.3g} < "
            f"distribution_range {self.values['distribution_range']:g}"
        )
        return Finding(window.step, window.epoch, evidence)


class WeightUpdateRatio(Rule):
    """An optimizer step changed some parameter tensor by more than `large_threshold` or less than
    `small_threshold` times its size (L2 norms: |update| / (|weights| + epsilon)), measured over one step
    per check (the weights are copied at the step before)."""

    name = "WeightUpdateRatio"
    parameters = (
        Parameter("large_threshold", 10.0, "largest update / weight ratio allowed", minimum=0.0),
        Parameter("small_threshold", 1e-8, "smallest update / weight ratio allowed", minimum=0.0),
        Parameter("epsilon", 1e-9, "added to the weights' norm against division by 0", minimum=0.0),
    )
    watches = frozenset({WEIGHTS})

    def __init__(self, values: dict[str, Any], context: RuleContext) -> None:
        super().__init__(values, context)
        self.before: list[torch.Tensor] = []
        self.before_step = -1

    def prepare(self, run: TrainState, step: int) -> None:
        self.before = [p.detach().clone() for _, p in trainable(run.network)]
        self.before_step = step

    def check(self, run: TrainState, window: StepWindow) -> Finding | None:
        named = trainable(run.network)
        fresh = self.before_step == window.step - 1 and window.trained and len(self.before) == len(named)
        before, self.before, self.before_step = self.before, [], -1
        if not fresh or not named:
            return None
        updates = torch._foreach_sub([p.detach() for _, p in named], before)
        update_norms = torch.stack(torch._foreach_norm(updates)).double()
        weight_norms = torch.stack(torch._foreach_norm(before)).double()
        ratios = (update_norms / (weight_norms + self.values["epsilon"])).cpu().tolist()
        names = [n for n, _ in named]
        large = first_over(ratios, names, lambda r: r > self.values["large_threshold"])
        small = first_over(ratios, names, lambda r: r < self.values["small_threshold"])
        if large is None and small is None:
            return None
        found = large or small
        assert found is not None
        name, ratio = found
        limit = "> large_threshold" if large else "< small_threshold"
        bound = self.values["large_threshold" if large else "small_threshold"]
        evidence = f"the update / weight ratio of {name} at step {window.step} is {ratio:.3g} {limit} {bound:g}"
        return Finding(window.step, window.epoch, evidence)


class StalledTraining(Rule):
    """No training step finished for `threshold` seconds. A watchdog thread (started by TrainingRules) sees
    it, since the hung loop cannot: the time since the last step, the epoch's end or the fit's start. The
    validation pass and checkpoints run between steps: keep the threshold above the longest of them."""

    name = "StalledTraining"
    parameters = (Parameter("threshold", 1800.0, "seconds without a finished step", minimum=0.0),)


RULES: dict[str, type[Rule]] = {
    rule.name: rule
    for rule in (
        VanishingGradient,
        ExplodingTensor,
        LossNotDecreasing,
        Overfit,
        Overtraining,
        ClassImbalance,
        PoorWeightInitialization,
        DeadRelu,
        SaturatedActivation,
        WeightUpdateRatio,
        StalledTraining,
    )
}
assert set(RULES) == set(RULE_NAMES)


# --- the callback ----------------------------------------------------------------------------------------


class TrainingRules(Callback):
    """Runs the rules during training: see the module's docstring. Build it with `from_hyperparameters`.

    A verdict is final: a rule that triggered is logged once (warning, rule_action=log) or fails the job
    (rule_action=stop: every process raises TrainingFailed naming the rule, the step and the evidence) and
    is not checked again. rules.json is rewritten at every trigger (before the job fails) and at the end."""

    name = "rules"  # the step count and the verdicts travel with checkpoints

    def __init__(
        self,
        rules: Sequence[str],
        parameters: Sequence[str] = (),
        *,
        action: str = "log",
        context: RuleContext | None = None,
        output_file: Path | None = None,
        failure_file: Path | None = None,
        check_every: int = CHECK_EVERY,
        exit: Callable[[int], Any] = os._exit,
    ) -> None:
        values = check_rule_parameters(rules, parameters)
        context = context or RuleContext()
        self.rules = [RULES[name](values[name], context) for name in rules]
        # Looked up once: a step costs a counter, a clock read and a list append for the default set.
        self.loss_rules = [r for r in self.rules if isinstance(r, ExplodingTensor | LossNotDecreasing)]
        self.first_step_rules = [r for r in self.rules if r.first_steps]
        self.step_rules = [r for r in self.rules if not (r.per_epoch or r.first_steps)]
        self.action, self.output_file, self.failure_file = action, output_file, failure_file
        self.every, self.exit = check_every, exit
        self.verdicts: dict[str, Finding] = {}
        self.step, self.epoch, self.trained = 0, 1, False
        self.checked = 0  # the step of the last check
        self.losses: list[torch.Tensor] = []
        self.loss_steps: list[int] = []
        self.progress = time.monotonic()
        self.lock = threading.RLock()  # the watchdog records too
        self.stopped = threading.Event()
        self.watchdog: threading.Thread | None = None

    @classmethod
    def from_hyperparameters(
        cls,
        hp: Hyperparameters,
        *,
        context: RuleContext,
        output_dir: Path | None,
        failure_file: Path | None,
    ) -> TrainingRules | None:
        """The job's rules (None for rules=none); UserError for bad rule_parameters. `output_dir` gets
        rules.json (the master's output/data; None on the other processes)."""
        if not hp.rules:
            return None
        output_file = output_dir / RULES_FILE if output_dir is not None else None
        return cls(
            hp.rules, hp.rule_parameters, action=hp.rule_action, context=context, output_file=output_file,
            failure_file=failure_file,
        )  # fmt: skip

    def active(self, rule: Rule) -> bool:
        return rule.name not in self.verdicts and rule.note is None

    # --- the hooks ---

    def on_fit_start(self, run: TrainState) -> None:
        self.progress, self.epoch = time.monotonic(), run.epoch
        for rule in self.rules:
            if rule.first_steps and self.active(rule) and self.step < rule.values["steps"]:
                rule.prepare(run, self.step)  # watches every step until its `steps`
            finding = rule.start(run) if self.active(rule) else None
            if finding is not None and self.found(rule, finding, None):
                self.close()
                raise self.failure(rule, finding)
        stalled = [rule for rule in self.rules if isinstance(rule, StalledTraining) and self.active(rule)]
        if stalled:
            self.stopped.clear()
            threshold = float(stalled[0].values["threshold"])
            self.watchdog = threading.Thread(target=self.watch, args=(threshold,), name="rules-watchdog", daemon=True)
            self.watchdog.start()

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        self.step += 1
        self.progress, self.epoch, self.trained = time.monotonic(), run.epoch, step is not None
        if step is not None and self.watching_losses():
            self.losses.append(step.loss)
            self.loss_steps.append(self.step)
        for rule in self.first_step_rules:
            if self.step == rule.values["steps"] and self.active(rule):
                self.judge(rule, rule.check(run, self.window(run, with_losses=False)), control)
        if self.step % self.every == 0:
            self.check(run, control)
        elif (self.step + 1) % self.every == 0:
            for rule in self.step_rules:
                if self.active(rule):
                    rule.prepare(run, self.step)

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        self.progress = time.monotonic()
        if self.checked < self.step:
            self.check(run, control)  # the epoch's last steps (a short fit may never reach check_every)
        for rule in self.rules:
            if self.active(rule):
                self.judge(rule, rule.epoch_end(run, metrics), control)

    def on_fit_end(self, run: TrainState) -> None:
        control = Control()
        for rule in self.first_step_rules:  # a fit shorter than `steps`: judge the steps there were
            if self.active(rule) and self.step < rule.values["steps"]:
                self.judge(rule, rule.check(run, self.window(run, with_losses=False)), control)
        self.close()
        self.write()
        if control.fail is not None:
            raise control.fail

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            verdicts = {name: vars(finding).copy() for name, finding in self.verdicts.items()}
        return {"step": self.step, "verdicts": verdicts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = self.checked = int(state["step"])
        self.verdicts = {name: Finding(**finding) for name, finding in state["verdicts"].items()}

    # --- checking ---

    def watching_losses(self) -> bool:
        return any(self.active(rule) for rule in self.loss_rules)

    def window(self, run: TrainState, with_losses: bool = True) -> StepWindow:
        losses = torch.stack(self.losses) if with_losses and self.losses else torch.empty(0)
        steps = self.loss_steps if with_losses else []
        if with_losses:
            self.losses, self.loss_steps = [], []
        return StepWindow(losses, steps, self.step, run.epoch, self.trained)

    def check(self, run: TrainState, control: Control) -> None:
        """Every step rule looks at the steps since the last check (at most one device sync each)."""
        window = self.window(run)
        scheduled, self.checked = self.step % self.every == 0, self.step
        for rule in self.step_rules:
            if not self.active(rule):
                continue
            self.judge(rule, rule.check(run, window), control)
            if scheduled and isinstance(rule, ActivationRule):
                rule.disarm()

    def judge(self, rule: Rule, finding: Finding | None, control: Control) -> None:
        if finding is not None and self.found(rule, finding, control):
            control.fail = self.failure(rule, finding)
            self.close()

    def found(self, rule: Rule, finding: Finding, control: Control | None) -> bool:
        """Record and log a trigger, write rules.json; True when the job must fail."""
        if finding.step <= 0:
            finding = Finding(self.step, finding.epoch, finding.evidence)
        with self.lock:
            if rule.name in self.verdicts:
                return False
            self.verdicts[rule.name] = finding
        if isinstance(rule, ActivationRule):
            rule.disarm()
        log.warning(
            "rule %s triggered at step %d (epoch %d): %s", rule.name, finding.step, finding.epoch, finding.evidence
        )
        self.write()
        return self.action == "stop"

    def failure(self, rule: Rule, finding: Finding) -> TrainingFailed:
        return TrainingFailed(
            f"rule {rule.name} triggered at step {finding.step} (epoch {finding.epoch}): {finding.evidence}; "
            "rule_action=stop"
        )

    # --- the watchdog (StalledTraining) ---

    def watch(self, threshold: float) -> None:
        poll = min(max(threshold / 10, 0.01), 5.0)
        while not self.stopped.wait(poll):
            idle = time.monotonic() - self.progress
            if idle > threshold:
                self.stalled(idle, threshold)
                return

    def stalled(self, idle: float, threshold: float) -> None:
        """The loop is stuck, so it cannot fail the job itself: with rule_action=stop, the watchdog records
        the verdict, writes the failure file and ends the process (exit code 1, as for a UserError)."""
        rule = next(rule for rule in self.rules if isinstance(rule, StalledTraining))
        evidence = f"no training step finished for {idle:.1f} s after step {self.step} (threshold {threshold:g} s)"
        finding = Finding(max(self.step, 1), self.epoch, evidence)
        if not self.found(rule, finding, None):
            return
        message = str(self.failure(rule, finding))
        log.error("training failed: %s", message)
        if self.failure_file is not None:
            write_failure(self.failure_file, message)
        for handler in logging.getLogger().handlers:  # os._exit skips the flushing an exit does
            handler.flush()
        self.exit(1)

    def close(self) -> None:
        """Stop the watchdog and remove every hook (the fit ended, or the job is failing)."""
        self.stopped.set()
        if self.watchdog is not None and self.watchdog is not threading.current_thread():
            self.watchdog.join()
        self.watchdog = None
        for rule in self.rules:
            if isinstance(rule, ActivationRule):
                rule.disarm()

    # --- the record ---

    def report(self) -> dict[str, Any]:
        """rules.json: every rule's parameters and verdict."""
        with self.lock:
            verdicts = dict(self.verdicts)
        entries = []
        for rule in self.rules:
            finding = verdicts.get(rule.name)
            entry: dict[str, Any] = {
                "name": rule.name,
                "parameters": rule.values,
                "status": ISSUES_FOUND if finding else NO_ISSUES_FOUND,
                "evaluated": finding is not None or rule.note is None,
            }
            if finding is not None:
                entry |= {"step": finding.step, "epoch": finding.epoch, "evidence": finding.evidence}
            elif rule.note is not None:
                entry["note"] = rule.note
            entries.append(entry)
        return {"rule_action": self.action, "steps": self.step, "rules": entries}

    def write(self) -> None:
        if self.output_file is None:
            return
        with self.lock:
            self.output_file.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.report(), indent=2) + "\n"
            atomic_write(self.output_file, lambda temp: temp.write_text(text, encoding="utf-8"))
