"""optml_runtime, the helpers a user's own train.py imports: atomic per-process checkpoints with a restore that
skips a corrupt newest one, tuner-parsable metric lines, and a stop flag — importable without torch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optml_runtime as rt
from optml.container.logs import metric_regex
from tests.conftest import REPO


@pytest.fixture
def ml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTML_ROOT", str(tmp_path / "ml"))
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "ml"


def test_checkpoints_go_to_opt_ml_checkpoints_and_only_the_last_ones_are_kept(ml: Path) -> None:
    assert rt.checkpoint_dir() == ml / "checkpoints"
    for step in range(5):
        rt.save_checkpoint({"step": step, "weights": torch.full((3,), float(step))}, step=step, keep=2)
    assert sorted(path.name for path in (ml / "checkpoints").iterdir()) == [
        "checkpoint-algo-1-000000003.pt",
        "checkpoint-algo-1-000000004.pt",
    ]
    restored = rt.load_latest_checkpoint()
    assert restored is not None and restored.step == 4
    assert torch.equal(restored.state["weights"], torch.full((3,), 4.0))


def test_a_corrupt_newest_checkpoint_is_skipped(ml: Path, caplog: pytest.LogCaptureFixture) -> None:
    rt.save_checkpoint({"step": 1}, step=1)
    newest = rt.save_checkpoint({"step": 2}, step=2)
    newest.write_bytes(newest.read_bytes()[:40])  # cut short, as a kill mid-copy would
    restored = rt.load_latest_checkpoint()
    assert restored is not None and (restored.step, restored.state) == (1, {"step": 1})
    assert "checkpoint-algo-1-000000002.pt cannot be read" in caplog.text


def test_no_checkpoint_restores_none(ml: Path) -> None:
    assert rt.load_latest_checkpoint() is None


def test_each_host_and_rank_has_its_own_checkpoints(ml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt.save_checkpoint({"who": "single"}, step=9)
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    path = rt.save_checkpoint({"who": "rank 3"}, step=1)
    assert path.name == "checkpoint-algo-2-rank3-000000001.pt"
    restored = rt.load_latest_checkpoint()
    assert restored is not None and restored.state == {"who": "rank 3"}


def test_the_checkpoint_directory_follows_checkpointconfig(ml: Path) -> None:
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "config" / "checkpointconfig.json").write_text(json.dumps({"LocalPath": str(ml / "ckpt")}))
    assert rt.checkpoint_dir() == ml / "ckpt"


def test_metric_lines_match_the_definitions(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    line = rt.log_metrics({"train:loss": 0.25, "validation:accuracy": 0.9375}, epoch=3)
    assert line == "epoch=3 train:loss=0.25 validation:accuracy=0.9375;"
    assert capsys.readouterr().out == line + "\n"
    definitions = rt.metric_definitions(["validation:accuracy"])
    assert definitions == [{"Name": "validation:accuracy", "Regex": metric_regex("validation:accuracy")}]
    match = re.search(definitions[0]["Regex"], line)
    assert match is not None and float(match.group(1)) == 0.9375


def test_only_rank_0_logs_metrics_unless_asked(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    rt.log_metrics({"loss": 1.0}, epoch=0)
    assert capsys.readouterr().out == ""
    rt.log_metrics({"loss": 1.0}, prefix="final", all_ranks=True)
    assert capsys.readouterr().out == "final loss=1;\n"


def test_the_stop_flag_is_raised_by_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop = rt.install_stop_handler()
        assert not stop and rt.stop_requested() is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and rt.stop_requested() is True and stop.signal_name == "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.requested = False


def test_it_imports_without_torch() -> None:
    script = "import sys; sys.modules['torch'] = None; import optml_runtime; print(optml_runtime.stop_requested())"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr
