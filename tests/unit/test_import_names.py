"""optml imports under one name, `optml`: a user's own train.py, serve.py or container.py (AWS's PyTorch
examples name their script train.py and import from it in inference.py) and optml's packages never shadow
each other."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TOP_LEVEL_IMPORT = re.compile(r"^\s*(from|import) (container|train|serve)\b", re.MULTILINE)
# ...and module paths in strings: monkeypatch targets, gunicorn's python:module, import_module(...)
MODULE_PATH_STRING = re.compile(r"[\"'](?:python:)?(container|train|serve)\.(?!py\b)[a-z_]")

USER_CODE = {
    "train.py": "NAME = 'the user train.py'\n\nclass Net:\n    pass\n",
    "serve.py": "NAME = 'the user serve.py'\n",
    "container.py": "NAME = 'the user container.py'\n",
    "inference.py": "from train import Net  # as AWS's examples do\n\ndef model_fn(model_dir):\n    return Net()\n",
}
CHECK = """
import inference, train, serve, container  # the user's own modules
print(train.NAME, serve.NAME, container.NAME, type(inference.model_fn('/opt/ml/model')).__name__, sep='; ')
import optml.container.entrypoint, optml.train.main, optml.serve.wsgi
print(optml.train.main.__name__, optml.serve.wsgi.__name__, optml.container.entrypoint.__name__, sep='; ')
"""


def test_no_code_imports_the_folders_by_their_own_names() -> None:
    """In a checkout `train` would import too (the repository root is on the path), as a second copy of
    every module: everything imports through `optml.`. examples/ is user code, not optml's: its inference.py
    does `from train import Net` as AWS's examples do, run with its own directory first on the path."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    offenders = [
        f"{name}: {match.group(0).strip()}"
        for name in tracked.stdout.split()
        if not name.startswith("examples/")
        for pattern in (TOP_LEVEL_IMPORT, MODULE_PATH_STRING)
        for match in pattern.finditer((REPO / name).read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_a_users_train_serve_and_container_modules_import_beside_optml(tmp_path: Path) -> None:
    """The image's layout — only /opt/optml, holding optml/, on the path — with the user's code directory
    first on the path, as script mode runs it."""
    site = tmp_path / "opt-optml"
    (site / "optml").mkdir(parents=True)
    shutil.copy(REPO / "optml" / "__init__.py", site / "optml" / "__init__.py")
    for package in ("container", "train", "serve"):
        (site / "optml" / package).symlink_to(REPO / package)
    code = tmp_path / "code"
    code.mkdir()
    for name, text in USER_CODE.items():
        (code / name).write_text(text)
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=code,  # sys.path[0] for -c: the user's directory, before PYTHONPATH
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "the user train.py; the user serve.py; the user container.py; Net",
        "optml.train.main; optml.serve.wsgi; optml.container.entrypoint",
    ]


def test_what_the_optml_command_reads_imports_without_torch_or_numpy() -> None:
    """The `optml` command installs without torch (a laptop, Python 3.10-3.13): the hyperparameter table and
    the metric names it checks a job against must import without torch, numpy or pyarrow."""
    script = (
        "import sys; sys.modules.update(torch=None, numpy=None, pyarrow=None);"
        "import optml.train.hyperparameters, optml.train.metric_names, optml.container.logs, optml.container.kinds;"
        "print(len(optml.train.metric_names.all_metric_names()))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "39"), result.stderr[-1000:]
