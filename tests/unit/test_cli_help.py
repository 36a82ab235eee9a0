"""Every `optml` command has --help with examples of its own use, and `optml --help` lists them all."""

from __future__ import annotations

import argparse

import pytest

from optml.cli.main import build_parser, main


def command_names() -> list[str]:
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return list(subparsers.choices)


def test_the_commands_are_registered() -> None:
    assert {"train", "deploy", "invoke", "delete-endpoint", "transform", "evaluate", "register", "tune"} <= set(
        command_names()
    )


@pytest.mark.parametrize("name", command_names())
def test_each_command_has_help_with_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])

    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: optml {name} ")
    examples = text[text.index("example") :]
    assert f"optml {name} " in examples


def test_optml_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:4] == "    " and line[4] != " "]
    assert listed == command_names()


def test_an_engine_failure_is_one_line_and_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import docker.errors

    from optml.cli import build

    def engine_gone(args: argparse.Namespace) -> int:
        raise docker.errors.APIError("500 Server Error: the engine stopped")

    monkeypatch.setattr(build, "run", engine_gone)
    assert main(["build"]) == 1
    assert capsys.readouterr().err == "optml: error: APIError: 500 Server Error: the engine stopped\n"

    def bug(args: argparse.Namespace) -> int:
        raise KeyError("plan")

    monkeypatch.setattr(build, "run", bug)
    with pytest.raises(KeyError):
        main(["build"])
