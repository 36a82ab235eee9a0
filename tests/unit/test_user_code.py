"""The user's requirements.txt: installed before the user's code runs, or a failure naming the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from optml.container.errors import UserError
from optml.container.user_code import failure_reason, install_requirements


def test_no_requirements_file_installs_nothing(tmp_path: Path) -> None:
    assert install_requirements(tmp_path) is False


def test_requirements_already_met_install_from_the_local_index_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip's own settings come from the environment: nothing is fetched
    (tmp_path / "requirements.txt").write_text("numpy\n")

    assert install_requirements(tmp_path) is True
    assert "Requirement already satisfied: numpy" in capfd.readouterr().out  # pip's output, streamed


def test_a_package_that_cannot_be_found_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty wheelhouse: what an air-gapped job may have
    (tmp_path / "requirements.txt").write_text("numpy\nnot-a-real-package-optml==1.0\n")

    with pytest.raises(UserError) as failed:
        install_requirements(tmp_path)

    message = str(failed.value)
    assert message.startswith(f"{tmp_path / 'requirements.txt'} could not be installed (package not-a-real-package")
    assert "No matching distribution found for not-a-real-package-optml==1.0" in message


def test_a_failure_pip_does_not_name_a_package_for_gives_the_exit_code() -> None:
    reason = failure_reason(Path("/opt/ml/code/requirements.txt"), ["ERROR: Invalid requirement: '!!'"], 1)
    assert reason == (
        "/opt/ml/code/requirements.txt could not be installed (pip exited with 1); pip said: "
        "ERROR: Invalid requirement: '!!'"
    )
