"""The modelling toolkit: architectures, losses, optimization, regularization, early stopping, CV, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from optml.container.artifact import load_model
from optml.container.errors import UserError
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.container.networks import CNN, MLP, NetworkSpec, RecurrentNet, build_network, freeze_blocks
from optml.container.paths import Paths
from optml.train import crossval, trainer
from optml.train.hyperparameters import Hyperparameters, parse_hyperparameters
from optml.train.losses import LossFunction, balanced_class_weights, per_row_loss
from optml.train.main import main, run
from optml.train.optim import build_optimizer, build_scheduler
from optml.train.trainer import Objective, Split, Trainer, augment_images
from tests.conftest import make_classification, make_opt_ml, make_regression

LOSS_OPTIONS = {"huber_delta": 1.0, "focal_gamma": 2.0, "focal_alpha": 0.25}


def objective(task: str, loss: str) -> Objective:
    return Objective(task, LossFunction(loss, per_row_loss(loss, task, **LOSS_OPTIONS)))


def image_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8×8 one-channel images; class 1 when the left half is brighter than the right."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(rows, 1, 8, 8)).astype(np.float32)
    labels = (images[:, :, :, :4].mean(axis=(1, 2, 3)) > images[:, :, :, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    return images, labels


def sequence_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 steps × 2 features; class 1 when feature 0 sums to more than 0 over time."""
    rng = np.random.default_rng(seed)
    sequences = rng.normal(size=(rows, 10, 2)).astype(np.float32)
    return sequences, (sequences[:, :, 0].sum(axis=1) > 0).astype(np.int64)


# --- architectures ---------------------------------------------------------------------------------


def test_mlp_blocks_follow_activation_batch_norm_and_dropout() -> None:
    spec = NetworkSpec("mlp", (5,), 3, hidden_units=(8, 4), activation="tanh", dropout=0.3, batch_norm=True)
    network = build_network(spec)
    assert isinstance(network, MLP)
    assert len(network.blocks) == 2
    first_block = network.blocks[0]
    assert isinstance(first_block, nn.Sequential)
    assert [type(m) for m in first_block] == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert isinstance(first_block[3], nn.Dropout) and first_block[3].p == pytest.approx(0.3)
    assert network(torch.zeros(4, 5)).shape == (4, 3)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_networks_take_time_by_feature_sequences(kind: str, bidirectional: bool) -> None:
    spec = NetworkSpec(kind, (10, 2), 1, hidden_units=(4,), hidden_size=6, num_layers=2, bidirectional=bidirectional)
    network = build_network(spec)
    assert isinstance(network, RecurrentNet)
    assert type(network.recurrent).__name__ == kind.upper()
    assert network.recurrent.bidirectional is bidirectional
    assert network(torch.zeros(3, 10, 2)).shape == (3, 1)


def test_cnn_pools_until_nothing_is_left_to_pool() -> None:
    network = build_network(NetworkSpec("cnn", (3, 4, 4), 5, hidden_units=(8,), conv_channels=(4, 4, 4)))
    assert isinstance(network, CNN)
    assert network(torch.zeros(2, 3, 4, 4)).shape == (2, 5)


@pytest.mark.parametrize(
    ("kind", "data", "shape"),
    [("cnn", image_data, (1, 8, 8)), ("lstm", sequence_data, (10, 2)), ("gru", sequence_data, (10, 2))],
)
def test_image_and_sequence_models_learn(kind: str, data, shape: tuple[int, ...]) -> None:
    features, labels = data(400, seed=0)
    validation_features, validation_labels = data(100, seed=1)
    hp = Hyperparameters(  # all 15 epochs: how well each network learns, not early stopping (tested below)
        model=kind,
        epochs=15,
        learning_rate=0.01,
        hidden_units=(16,),
        conv_channels=(8,),
        hidden_size=16,
        early_stopping_patience=0,
    )
    torch.manual_seed(0)
    network = build_network(NetworkSpec(kind, shape, 1, hidden_units=(16,), conv_channels=(8,), hidden_size=16))
    history = Trainer(
        network,
        Split.from_arrays(features, labels),
        Split.from_arrays(validation_features, validation_labels),
        hp=hp,
        objective=objective(BINARY, "bce"),
    ).fit()
    assert history.last["validation:accuracy"] >= 0.85


def test_frozen_blocks_keep_their_weights_while_the_head_trains() -> None:
    torch.manual_seed(0)
    network = build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(8, 8)))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    freeze_blocks(network, 1)
    data = make_classification(64, 4, 2)
    Trainer(
        network,
        Split.from_arrays(data[:, 1:].astype(np.float32), data[:, 0].astype(np.int64)),
        None,
        hp=Hyperparameters(epochs=2, learning_rate=0.05),
        objective=objective(BINARY, "bce"),
        frozen_blocks=[network.get_submodule("blocks.0")],
    ).fit()
    after = network.state_dict()
    assert torch.equal(before["blocks.0.0.weight"], after["blocks.0.0.weight"])
    assert not torch.equal(before["blocks.1.0.weight"], after["blocks.1.0.weight"])
    assert not torch.equal(before["head.weight"], after["head.weight"])


# --- losses ----------------------------------------------------------------------------------------


def test_focal_loss_with_no_focusing_is_alpha_weighted_cross_entropy() -> None:
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 0, 1])
    focal = per_row_loss("focal", BINARY, huber_delta=1.0, focal_gamma=0.0, focal_alpha=0.5)(logits, labels, "none")
    bce = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    torch.testing.assert_close(focal, 0.5 * bce)
    focused = per_row_loss("focal", BINARY, huber_delta=1.0, focal_gamma=2.0, focal_alpha=0.5)(logits, labels, "none")
    assert focused[0] < 0.1 * focal[0]  # the confident, correct row almost vanishes


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("mse", nn.MSELoss()),
        ("mae", nn.L1Loss()),
        ("huber", nn.HuberLoss(delta=1.0)),
    ],
)
def test_regression_losses_match_torch(name: str, reference: nn.Module) -> None:
    outputs, targets = torch.tensor([[0.0], [2.0], [5.0]]), torch.tensor([0.5, 0.0, 1.0])
    loss = LossFunction(name, per_row_loss(name, REGRESSION, **LOSS_OPTIONS))
    torch.testing.assert_close(loss(outputs, targets), reference(outputs[:, 0], targets))


def test_class_weighted_cross_entropy_matches_torch() -> None:
    outputs, targets = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 3
    weights = torch.tensor([1.0, 2.0, 5.0])
    loss = LossFunction("cross_entropy", per_row_loss("cross_entropy", MULTICLASS, **LOSS_OPTIONS), weights)
    torch.testing.assert_close(loss(outputs, targets), nn.CrossEntropyLoss(weight=weights)(outputs, targets))


def test_balanced_class_weights_match_scikit_learn() -> None:
    targets = np.array([0] * 90 + [1] * 10)
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=targets)
    np.testing.assert_allclose(balanced_class_weights(targets, 2), expected)


# --- optimization and regularization ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizer_applies_l2_to_weights_only(name: str, kind: type) -> None:
    network = build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(8,)))
    optimizer = build_optimizer(network, Hyperparameters(optimizer=name, l2=0.01, momentum=0.5))
    assert isinstance(optimizer, kind)
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and all(p.ndim == 2 for p in decayed["params"])
    assert not_decayed["weight_decay"] == 0.0 and all(p.ndim == 1 for p in not_decayed["params"])
    if name == "sgd":
        assert decayed["momentum"] == 0.5
    without_l2 = build_optimizer(network, Hyperparameters(optimizer=name))
    assert len(without_l2.param_groups) == 1 and without_l2.param_groups[0]["weight_decay"] == 0.0


def test_learning_rate_schedules() -> None:
    def lr_after(steps: int, **settings: object) -> float:
        network = nn.Linear(2, 1)
        hp = Hyperparameters(learning_rate=0.1, **settings)  # type: ignore[arg-type]
        optimizer = build_optimizer(network, hp)
        scheduler = build_scheduler(optimizer, hp)
        for _ in range(steps):
            optimizer.step()
            scheduler.step(1.0) if hp.lr_scheduler == "plateau" else scheduler.step()  # type: ignore[union-attr,arg-type]
        return float(optimizer.param_groups[0]["lr"])

    assert lr_after(4, lr_scheduler="step", lr_step_size=2, lr_gamma=0.5) == pytest.approx(0.025)
    assert lr_after(10, lr_scheduler="cosine", epochs=10) == pytest.approx(0.0, abs=1e-9)
    assert lr_after(4, lr_scheduler="plateau", lr_patience=1, lr_gamma=0.5) == pytest.approx(0.05)
    assert build_scheduler(build_optimizer(nn.Linear(2, 1), Hyperparameters()), Hyperparameters()) is None


def train_mlp(hp: Hyperparameters) -> nn.Module:
    torch.manual_seed(0)
    network = build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(16,)))
    data = make_classification(200, 4, 2)
    Trainer(
        network,
        Split.from_arrays(data[:, 1:].astype(np.float32), data[:, 0].astype(np.int64)),
        None,
        hp=hp,
        objective=objective(BINARY, "bce"),
    ).fit()
    return network


def test_l1_and_l2_shrink_the_weights() -> None:
    def weight_norm(network: nn.Module) -> float:
        return sum(float(p.detach().abs().sum()) for p in network.parameters() if p.ndim >= 2)

    plain = weight_norm(train_mlp(Hyperparameters(epochs=20, learning_rate=0.01)))
    assert weight_norm(train_mlp(Hyperparameters(epochs=20, learning_rate=0.01, l1=0.01))) < 0.7 * plain
    assert weight_norm(train_mlp(Hyperparameters(epochs=20, learning_rate=0.01, l2=0.1, optimizer="adamw"))) < plain


def test_gradient_clipping_bounds_each_step() -> None:
    torch.manual_seed(0)
    start = build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(16,))).state_dict()
    clipped = train_mlp(
        Hyperparameters(epochs=1, batch_size=200, optimizer="sgd", momentum=0.0, learning_rate=1.0, grad_clip=0.001)
    )
    moved = torch.sqrt(sum(((clipped.state_dict()[k] - start[k]) ** 2).sum() for k in start))
    assert float(moved) == pytest.approx(0.001, rel=1e-3)  # one SGD step of lr 1 × gradient norm 0.001


@pytest.mark.parametrize(
    ("task", "loss", "dtype"),
    [(BINARY, "bce", torch.float32), (BINARY, "focal", torch.float32), (MULTICLASS, "cross_entropy", torch.int64),
     (MULTICLASS, "focal", torch.int64), (REGRESSION, "huber", torch.float32)],
)  # fmt: skip
def test_targets_are_converted_once_to_what_the_loss_reads(task: str, loss: str, dtype: torch.dtype) -> None:
    targets = torch.tensor([0, 1, 1, 0]) if task != REGRESSION else torch.tensor([0.5, -1.0], dtype=torch.float64)
    converted = objective(task, loss).loss_targets(targets)
    assert converted.dtype == dtype
    torch.testing.assert_close(converted.double(), targets.double())
    outputs = torch.zeros(len(targets), 2 if task == MULTICLASS else 1)
    assert torch.isfinite(objective(task, loss).loss(outputs, converted))  # the loss takes them as they are


def frozen_fit(rows: int, batch_size: int, loss: LossFunction) -> tuple[nn.Module, Split, dict[str, float]]:
    """One epoch of SGD with a vanishing learning rate: the weights stay where they start, so the epoch's
    train metrics can be recomputed from outside."""
    torch.manual_seed(0)
    network = build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(16,)))
    data = make_classification(rows, 4, 2, seed=5)
    split = Split.from_arrays(data[:, 1:].astype(np.float32), data[:, 0].astype(np.int64))
    hp = Hyperparameters(epochs=1, batch_size=batch_size, optimizer="sgd", momentum=0.0, learning_rate=1e-12)
    history = Trainer(network, split, None, hp=hp, objective=Objective(BINARY, loss)).fit()
    return network, split, history.epochs[0]


@pytest.mark.parametrize("class_weights", [None, [0.2, 3.0]])
def test_train_loss_is_the_weighted_mean_over_every_row(class_weights: list[float] | None) -> None:
    """Batches of 300, 300, 300 and 100 rows, with and without class weights: the mean of batch means
    would be wrong on both counts."""
    weights = torch.tensor(class_weights) if class_weights else None
    loss = LossFunction("bce", per_row_loss("bce", BINARY, **LOSS_OPTIONS), weights)
    network, split, metrics = frozen_fit(1000, 300, loss)
    with torch.no_grad():
        expected = float(loss(network(split.features), split.targets))
    assert metrics["train:loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("rows", "every", "why"),
    [(8_000, 1, "all rows"), (50_000, 5, "the 10,000-row floor"), (200_000, 10, "a tenth"), (10**7, 200, "the cap")],
)
def test_the_train_metrics_sample_is_a_tenth_of_the_epoch_within_bounds(rows: int, every: int, why: str) -> None:
    assert trainer.sampled_batches(rows) == every, why


def test_train_metrics_but_the_loss_use_an_evenly_spaced_sample_of_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 100 rows, 20 batches of 50 keep every 10th: the epoch order's rows 0-49 and 500-549."""
    monkeypatch.setattr(trainer, "TRAIN_METRICS_SAMPLE", 100)
    network, split, metrics = frozen_fit(1000, 50, LossFunction("bce", per_row_loss("bce", BINARY, **LOSS_OPTIONS)))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(Hyperparameters().seed))
    kept = torch.cat([order[0:50], order[500:550]])
    with torch.no_grad():
        predicted = (network(split.features[kept])[:, 0] > 0).long()
    assert metrics["train:accuracy"] == pytest.approx(float((predicted == split.targets[kept]).float().mean()))
    everywhere = (network(split.features)[:, 0] > 0).long()
    assert metrics["train:accuracy"] != pytest.approx(float((everywhere == split.targets).float().mean()))


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = make_classification(40, 4, 2, seed=1)
    train[:, 0] = rng.integers(0, 2, 40)  # pure noise: validation loss only gets worse as it memorizes
    root = make_opt_ml(
        tmp_path,
        train,
        make_classification(100, 4, 2, seed=2),
        {"epochs": "60", "hidden_units": "64,64", "learning_rate": "0.02", "early_stopping_patience": "3"},
    )
    final = run(Paths(root=root))
    evaluation = json.loads((root / "output" / "data" / "evaluation.json").read_text())
    assert evaluation["stopped_early"] is True
    best = evaluation["best_epoch"]
    assert len(evaluation["history"]) == best + 3
    losses = [epoch["validation:loss"] for epoch in evaluation["history"]]
    assert losses[best - 1] == min(losses)
    assert final["validation:loss"] == pytest.approx(losses[best - 1])
    assert evaluation["channels"]["validation"]["metrics"]["loss"] == pytest.approx(losses[best - 1], rel=1e-5)


def test_augmentation_flips_and_crops_reproducibly() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    first = augment_images(images, torch.Generator().manual_seed(3))
    again = augment_images(images, torch.Generator().manual_seed(3))
    assert first.shape == images.shape
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, images)


# --- cross-validation ------------------------------------------------------------------------------


def test_kfold_and_stratified_folds_partition_the_rows() -> None:
    classes = np.array([0] * 80 + [1] * 20)
    for strategy in ("kfold", "stratified"):
        folds = crossval.fold_indices(100, 5, strategy, seed=0, classes=classes)
        validation_rows = np.concatenate([validation for _, validation in folds])
        assert sorted(validation_rows) == list(range(100))
        for train_rows, validation in folds:
            assert not set(train_rows) & set(validation)
    for _, validation in crossval.fold_indices(100, 5, "stratified", seed=0, classes=classes):
        assert (classes[validation] == 1).sum() == 4  # every fold keeps the 80/20 class mix


def test_timeseries_folds_never_validate_on_the_past() -> None:
    order = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4])  # time value of each row
    folds = crossval.fold_indices(10, 3, "timeseries", seed=0, order=order)
    assert len(folds) == 3
    for train_rows, validation in folds:
        assert order[train_rows].max() < order[validation].min()
    assert [len(train) for train, _ in folds] == [3, 6, 8]


def test_stratified_folds_need_enough_rows_per_class() -> None:
    with pytest.raises(UserError, match="class index 1 has 2: lower k_folds or use cv_strategy=kfold"):
        crossval.fold_indices(10, 3, "stratified", seed=0, classes=np.array([0] * 8 + [1] * 2))


def test_cross_validation_reports_folds_then_trains_the_final_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_opt_ml(
        tmp_path,
        make_classification(150, 4, 2),
        None,
        {"epochs": "8", "k_folds": "3", "learning_rate": "0.01"},
    )
    run(Paths(root=root))
    cv = json.loads((root / "output" / "data" / "evaluation.json").read_text())["cross_validation"]
    assert cv["k_folds"] == 3 and cv["strategy"] == "stratified" and len(cv["folds"]) == 3
    accuracies = [fold["accuracy"] for fold in cv["folds"]]
    assert cv["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert cv["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies))
    lines = capsys.readouterr().out.splitlines()
    cv_line = next(line for line in lines if line.startswith("cv folds=3 "))
    assert f"cv:accuracy={cv['summary']['accuracy']['mean']:.6g}" in cv_line
    assert lines.index(cv_line) < next(i for i, line in enumerate(lines) if line.startswith("epoch=1 "))
    assert load_model(root / "model").metadata.hyperparameters["k_folds"] == 3


# --- whole jobs: metrics lines, reports, bad combinations -------------------------------------------


def test_tuning_objective_is_logged_last_on_every_epoch_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_opt_ml(tmp_path, make_classification(80, 3, 2), make_classification(40, 3, 2, seed=5), {"epochs": "3"})
    hyperparameters = json.loads((root / "input/config/hyperparameters.json").read_text())
    hyperparameters["_tuning_objective_metric"] = "validation:auc"
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    run(Paths(root=root))
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(epoch_lines) == 3
    assert all(line.split()[-1].startswith("validation:auc=") for line in epoch_lines)
    assert all(" train:precision=" in line and " validation:log_loss=" in line for line in epoch_lines)


def test_report_plots_and_model_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, validation, test = (make_classification(n, 3, 3, seed=s) for n, s in ((300, 1), (90, 2), (60, 3)))
    root = make_opt_ml(
        tmp_path, train, validation, {"epochs": "10", "learning_rate": "0.02", "class_weights": "balanced"}
    )
    (root / "input/data/test").mkdir()
    np.savetxt(root / "input/data/test/test.csv", test, delimiter=",", fmt="%g")
    run(Paths(root=root))
    data = root / "output" / "data"
    evaluation = json.loads((data / "evaluation.json").read_text())
    assert set(evaluation["channels"]) == {"train", "validation", "test"}
    test_metrics = evaluation["channels"]["test"]["metrics"]
    assert np.sum(test_metrics["confusion_matrix"]) == 60
    assert {"precision_weighted", "recall_weighted", "f1_weighted", "specificity", "log_loss"} <= set(test_metrics)
    final_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("final "))
    assert f"test:accuracy={test_metrics['accuracy']:.6g}" in final_line
    for plot in ("learning_curves.png", "roc_curve.png", "confusion_matrix.png"):
        assert (data / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((root / "model" / "model_card.json").read_text())
    assert card["model_overview"]["task"] == "multiclass_classification"
    assert card["training_details"]["data"]["test"] == {"rows": 60, "files": 1}
    assert card["evaluation_details"]["metrics"]["test"]["accuracy"] == pytest.approx(test_metrics["accuracy"])
    markdown = (root / "model" / "MODEL_CARD.md").read_text()
    assert "## Limitations" in markdown and "Small training set (300 rows)" in markdown
    assert "| test |" in markdown


def test_regression_job_with_huber_loss_and_cosine_schedule(tmp_path: Path) -> None:
    root = make_opt_ml(
        tmp_path,
        make_regression(300, 3, seed=1),
        make_regression(80, 3, seed=2),
        {
            "epochs": "40",
            "loss": "huber",
            "lr_scheduler": "cosine",
            "learning_rate": "0.01",
            "optimizer": "adamw",
        },
    )
    final = run(Paths(root=root))
    assert final["validation:r2"] >= 0.9
    assert final["validation:rmse"] == pytest.approx(np.sqrt(final["validation:mse"]))


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        (
            {"task": "regression", "loss": "focal"},
            "loss=focal does not fit task=regression: use one of mse, mae, huber",
        ),
        ({"augment": "true"}, "augment=true flips and crops images, so it needs model=cnn (model=mlp)"),
        (
            {"time_column": "t", "k_folds": "3", "cv_strategy": "stratified"},
            "cv_strategy=stratified shuffles rows, but time_column='t' says they are ordered in time",
        ),
        ({"k_folds": "1"}, "k_folds=1 is not cross-validation"),
        ({"early_stopping_metric": "train:loss"}, "must be a validation metric such as validation:loss"),
        (
            {"task": "binary_classification", "class_weights": "1,2,3"},
            "class_weights has 3 values; binary_classification needs 2",
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused(hyperparameters: dict[str, str], message: str) -> None:
    with pytest.raises(
        UserError, match="Invalid hyperparameters: .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        parse_hyperparameters(hyperparameters)


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        (
            {"model": "cnn"},
            "model=cnn needs images (N×channels×height×width), but channel 'train' holds tabular rows"
            " (N×features): use model=mlp",
        ),
        ({"early_stopping_patience": "2"}, "early_stopping_patience needs a 'validation' channel to watch"),
        ({"freeze_layers": "5"}, "freeze_layers=5 but model=mlp has 2 blocks; freeze at most 2"),
        (
            {"num_classes": "3"},
            "channel 'train' row 1: label 7 is outside num_classes=3 (expected an integer 0..2)",
        ),
        ({"class_weights": "1,2,3"}, "class_weights has 3 values but the labels have 2 classes ([0, 7])"),
    ],
)
def test_data_dependent_problems_name_what_to_change(
    tmp_path: Path, hyperparameters: dict[str, str], message: str
) -> None:
    data = make_classification(30, 2, 2)
    data[:, 0] = np.where(data[:, 0] == 1, 0, 7)
    data[0, 0] = 7
    root = make_opt_ml(tmp_path, data, None, {"epochs": "1"} | hyperparameters)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTML_ROOT", str(root))
        assert main([]) == 1
    assert (root / "output" / "failure").read_text().startswith(message) or message in (
        root / "output" / "failure"
    ).read_text()


@pytest.mark.parametrize(
    "spec",
    [
        NetworkSpec("mlp", (4,), 1, hidden_units=(8, 4)),
        NetworkSpec("cnn", (1, 8, 8), 2, hidden_units=(8,), conv_channels=(4,)),
        NetworkSpec("lstm", (5, 2), 1, hidden_units=(8, 4), hidden_size=6),
    ],
    ids=lambda spec: spec.kind,
)
def test_every_block_runs_through_its_forward_hooks(spec: NetworkSpec) -> None:
    """Profilers and Debugger-style rules watch training through forward hooks: no block may bypass them
    (the recurrent network's dense blocks call .forward only when TorchScript compiles the model.pt export)."""
    network = build_network(spec)
    blocks = network.get_submodule("blocks")
    assert isinstance(blocks, nn.ModuleList)
    seen: list[int] = []
    for index, block in enumerate(blocks):
        block.register_forward_hook(lambda module, inputs, output, index=index: seen.append(index))
    network(torch.zeros(3, *spec.input_shape))
    assert seen == list(range(len(blocks)))
