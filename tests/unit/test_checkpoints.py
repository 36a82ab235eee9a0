"""Spot safety: checkpoints, exact resume after a stop or a kill, and warm starts from a previous model."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from optml.container.errors import UserError
from optml.container.paths import Paths
from optml.train.checkpoints import Checkpointer
from optml.train.interrupt import TrainingStopped
from optml.train.main import main, run
from tests.conftest import StopAfter, make_classification, make_opt_ml

HYPERPARAMETERS = {
    "epochs": "4",
    "batch_size": "16",
    "hidden_units": "16,8",
    "dropout": "0.2",  # draws from torch's global RNG: resume must restore it
    "learning_rate": "0.01",
    "lr_scheduler": "step",
    "lr_step_size": "2",
    "early_stopping_patience": "10",
    "checkpoint_every_steps": "1",
    "keep_checkpoints": "1000",
}


def job(root: Path, **overrides: str) -> Path:
    return make_opt_ml(
        root,
        make_classification(100, 4, 2, seed=1),  # 7 batches per epoch, the last one short
        make_classification(40, 4, 2, seed=2),
        HYPERPARAMETERS | overrides,
    )


def weights(root: Path) -> dict[str, np.ndarray]:
    return load_file(str(root / "model" / "model.safetensors"))


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    root = job(tmp_path_factory.mktemp("uninterrupted") / "ml")
    run(Paths(root=root))
    evaluation = json.loads((root / "output/data/evaluation.json").read_text())
    return weights(root), evaluation


@pytest.mark.parametrize(
    "stops", [[3], [6], [7], [1, 5, 9]], ids=["mid-epoch", "after-the-last-batch", "epoch-end", "three-stops"]
)
def test_stopping_and_resuming_gives_bit_identical_weights(tmp_path: Path, uninterrupted, stops: list[int]) -> None:
    expected_weights, expected_evaluation = uninterrupted
    root = job(tmp_path)
    for steps in stops:
        with pytest.raises(TrainingStopped):
            run(Paths(root=root), StopAfter(steps))
        assert (root / "model" / "model.safetensors").exists()  # a usable model after every stop
    run(Paths(root=root))
    assert_same_weights(weights(root), expected_weights)
    evaluation = json.loads((root / "output/data/evaluation.json").read_text())
    assert evaluation["history"] == expected_evaluation["history"]


def test_a_class_weighted_run_resumes_mid_epoch_with_the_same_train_loss(tmp_path: Path) -> None:
    """Class weights make each batch's loss weight a tensor, which the checkpoint stores as a number."""
    whole = job(tmp_path / "whole", class_weights="0.3,2.5")
    run(Paths(root=whole))
    root = job(tmp_path / "resumed", class_weights="0.3,2.5")
    with pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(10))  # mid-way through epoch 2
    run(Paths(root=root))
    assert_same_weights(weights(root), weights(whole))
    history = json.loads((root / "output/data/evaluation.json").read_text())["history"]
    assert history == json.loads((whole / "output/data/evaluation.json").read_text())["history"]


@pytest.mark.parametrize("keep", [2, 9, 17])
def test_resuming_from_any_checkpoint_after_a_kill_gives_bit_identical_weights(
    tmp_path: Path, uninterrupted, keep: int
) -> None:
    """A SIGKILL leaves the checkpoints written so far: keep the first `keep`, delete the rest, resume."""
    root = job(tmp_path)
    run(Paths(root=root))
    checkpoints = sorted((root / "checkpoints").glob("checkpoint-algo-1-*.pt"))
    assert len(checkpoints) == 4 * 7 + 4  # every step, plus each epoch end
    for later in checkpoints[keep:]:
        later.unlink()
    shutil.rmtree(root / "model")
    run(Paths(root=root))
    assert_same_weights(weights(root), uninterrupted[0])


def test_a_corrupt_newest_checkpoint_is_skipped(
    tmp_path: Path, uninterrupted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    root = job(tmp_path)
    with pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(10))
    newest = sorted((root / "checkpoints").glob("*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # a truncated upload
    run(Paths(root=root))
    assert f"skipping unreadable checkpoint {newest}" in caplog.text
    assert "resuming from checkpoint-algo-1-e00002-b0000002.pt" in caplog.text
    assert_same_weights(weights(root), uninterrupted[0])


def test_only_the_last_checkpoints_are_kept_under_per_host_names(tmp_path: Path) -> None:
    root = job(tmp_path, keep_checkpoints="2", checkpoint_every_steps="0")
    run(Paths(root=root))
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == [
        "checkpoint-algo-1-e00004-b0000000.pt",
        "checkpoint-algo-1-e00005-b0000000.pt",
    ]


def test_checkpoint_local_path_comes_from_checkpointconfig(tmp_path: Path) -> None:
    root = job(tmp_path / "ml", checkpoint_every_steps="0")
    (root / "input/config/checkpointconfig.json").write_text(json.dumps({"LocalPath": str(tmp_path / "ckpt")}))
    run(Paths(root=root))
    assert len(list((tmp_path / "ckpt").glob("checkpoint-algo-1-*.pt"))) == 4  # one per epoch end
    assert not (root / "checkpoints").exists()


def test_resuming_with_a_different_network_shape_is_refused(tmp_path: Path) -> None:
    root = job(tmp_path)
    with pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(3))
    (root / "input/config/hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS | {"hidden_units": "32"}))
    with pytest.raises(
        UserError, match=r"was written for a different model \(network: checkpoint .*'hidden_units': \[16, 8\]"
    ):
        run(Paths(root=root))


def test_a_checkpoint_of_a_newer_format_fails_the_job_naming_it_and_both_versions(tmp_path: Path) -> None:
    root = job(tmp_path)
    with pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(3))
    newest = sorted((root / "checkpoints").glob("*.pt"))[-1]
    payload = torch.load(newest, weights_only=True)
    assert payload["format"] == 1
    torch.save(payload | {"format": 2}, newest)
    with pytest.raises(UserError) as refused:
        run(Paths(root=root))  # not skipped for the older checkpoint beside it: that would lose training
    assert str(refused.value) == (
        f"checkpoint {newest} has format version 2, newer than this image reads (version 1): it was written by a"
        " newer optml image; resume with that image or a newer one, or remove the checkpoints from"
        f" {root / 'checkpoints'} (and checkpoint_s3_uri) to start over, which loses the training they hold"
    )


def test_checkpoints_of_the_current_format_load_and_others_are_refused_at_any_step(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path, "algo-1")
    path = checkpointer.save({"weights": torch.ones(2)}, epoch=1, batches_done=3)
    assert (checkpointer.load_latest() or {})["format"] == 1
    assert checkpointer.load_at(1, 3)["format"] == 1
    payload = torch.load(path, weights_only=True)
    del payload["format"]
    torch.save(payload, path)
    message = (
        f"checkpoint {path} has format version None, not one optml writes (this image reads version 1); remove"
        f" the checkpoints from {tmp_path} (and checkpoint_s3_uri) to start over, which loses the training they hold"
    )
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        checkpointer.load_latest()
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        checkpointer.load_at(1, 3)  # the step every process of a distributed job agreed on


def test_sigterm_in_main_saves_checkpoint_and_model_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = job(tmp_path)
    monkeypatch.setenv("OPTML_ROOT", str(root))
    stop_after = StopAfter(5)
    monkeypatch.setattr("optml.train.main.StopRequest.__call__", lambda self: stop_after())
    assert main([]) == 0
    assert (root / "model" / "model.safetensors").exists()
    assert not (root / "output" / "failure").exists()
    assert sorted((root / "checkpoints").glob("*.pt"))[-1].name == "checkpoint-algo-1-e00001-b0000006.pt"


# --- incremental and transfer learning --------------------------------------------------------------


def tarball(model_dir: Path, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


@pytest.fixture(scope="module")
def january_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_opt_ml(
        tmp_path_factory.mktemp("january") / "ml",
        make_classification(200, 4, 2, seed=3),
        None,
        {"epochs": "10", "hidden_units": "16,8", "learning_rate": "0.01"},
    )
    run(Paths(root=root))
    return root / "model"


def test_incremental_training_starts_from_the_previous_weights_and_scaling(tmp_path: Path, january_model: Path) -> None:
    february = make_classification(200, 4, 2, seed=4)
    root = make_opt_ml(tmp_path / "warm", february, None, {"epochs": "1", "learning_rate": "0.000001"})
    tarball(january_model, root / "input/data/model")
    run(Paths(root=root))
    previous, updated = load_file(str(january_model / "model.safetensors")), weights(root)
    for key in previous:  # a tiny learning rate: the weights barely move from January's
        np.testing.assert_allclose(updated[key], previous[key], atol=1e-4)
    january_meta = json.loads((january_model / "optml-model.json").read_text())
    february_meta = json.loads((root / "model" / "optml-model.json").read_text())
    assert february_meta["feature_mean"] == january_meta["feature_mean"]  # January's scaling, not refitted
    assert february_meta["network"] == january_meta["network"]


def test_freeze_layers_keeps_the_previous_first_blocks(tmp_path: Path, january_model: Path) -> None:
    root = make_opt_ml(
        tmp_path,
        make_classification(200, 4, 2, seed=5),
        None,
        {"epochs": "3", "freeze_layers": "1", "learning_rate": "0.05"},
    )
    shutil.copytree(january_model, root / "input/data/model")  # extracted files work too
    run(Paths(root=root))
    previous, updated = load_file(str(january_model / "model.safetensors")), weights(root)
    np.testing.assert_array_equal(updated["blocks.0.0.weight"], previous["blocks.0.0.weight"])
    assert not np.array_equal(updated["blocks.1.0.weight"], previous["blocks.1.0.weight"])
    assert not np.array_equal(updated["head.weight"], previous["head.weight"])


@pytest.mark.parametrize(
    ("features", "hyperparameters", "message"),
    [
        (3, {}, "part-0.csv has 3 features but the model's training data has 4"),
        (4, {"hidden_units": "32"}, "hidden_units=[32] but the previous model has hidden_units=[16, 8]"),
        (4, {"task": "regression"}, "task=regression but the previous model does binary_classification"),
    ],
)
def test_a_previous_model_that_does_not_fit_is_refused(
    tmp_path: Path, january_model: Path, features: int, hyperparameters: dict[str, str], message: str
) -> None:
    root = make_opt_ml(tmp_path, make_classification(50, features, 2), None, {"epochs": "1"} | hyperparameters)
    tarball(january_model, root / "input/data/model")
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        run(Paths(root=root))


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../escape.txt", tarfile.REGTYPE, "'../escape.txt' would be written outside the model directory"),
        ("/etc/passwd", tarfile.REGTYPE, "'/etc/passwd' would be written outside the model directory"),
        ("link", tarfile.SYMTYPE, "link 'link' -> '/etc/passwd' points outside"),
    ],
)
def test_unsafe_model_archives_are_refused(tmp_path: Path, name: str, kind: bytes, message: str) -> None:
    root = make_opt_ml(tmp_path, make_classification(50, 4, 2), None, {"epochs": "1"})
    (root / "input/data/model").mkdir(parents=True)
    with tarfile.open(root / "input/data/model/model.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo(name)
        member.type = kind
        member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        member.size = 0 if kind == tarfile.SYMTYPE else 2
        tar.addfile(member, io.BytesIO(b"hi") if kind == tarfile.REGTYPE else None)
    with pytest.raises(UserError, match="channel 'model': refusing to extract .*model.tar.gz: " + re.escape(message)):
        run(Paths(root=root))
    assert not (tmp_path / "escape.txt").exists()


def test_a_truncated_or_ambiguous_model_channel_is_refused(tmp_path: Path, january_model: Path) -> None:
    root = make_opt_ml(tmp_path, make_classification(50, 4, 2), None, {"epochs": "1"})
    archive = tarball(january_model, root / "input/data/model")
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])  # an upload cut short
    with pytest.raises(UserError) as refused:
        run(Paths(root=root))
    assert str(refused.value) == (
        f"channel 'model': refusing to extract {archive}: model.tar.gz cannot be extracted whole"
        " (Compressed file ended before the end-of-stream marker was reached)"
    )
    archive.write_bytes(whole)
    (archive.parent / "older").mkdir()
    shutil.copy(archive, archive.parent / "older" / "model.tar.gz")
    with pytest.raises(UserError, match=r"channel 'model' holds 2 archives \(.*\): pass exactly one model.tar.gz"):
        run(Paths(root=root))


def test_model_channel_without_a_model(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, make_classification(50, 4, 2), None, {"epochs": "1"})
    (root / "input/data/model").mkdir(parents=True)
    (root / "input/data/model/notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"channel 'model' \(.*\) holds neither optml-model.json nor a model.tar.gz"):
        run(Paths(root=root))
