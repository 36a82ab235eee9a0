"""The failure file of a script that failed: the user's exception first, then the exit code and the command,
within 1024 bytes — and never over a failure file the script wrote itself."""

from __future__ import annotations

from pathlib import Path

from optml.train.script.failure import failure_reason, file_state, last_exception, report_failure

COMMAND = ["/opt/venv/bin/python", "train.py", "--epochs", "3"]

TRACEBACK = """\
epoch 1 done
Traceback (most recent call last):
  File "/opt/ml/code/train.py", line 40, in <module>
    main(parse_args())
  File "/opt/ml/code/train.py", line 31, in main
    raise ValueError(f"learning rate must be positive, got {args.lr}")
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
ValueError: learning rate must be positive, got -1.0
"""

CHAINED = """\
Traceback (most recent call last):
  File "/opt/ml/code/train.py", line 5, in load
    open(path)
FileNotFoundError: [Errno 2] No such file or directory: '/opt/ml/input/data/train/x.csv'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/opt/ml/code/train.py", line 9, in <module>
    load()
  File "/opt/ml/code/train.py", line 7, in load
    raise data.MissingChannel("no training data")
data.MissingChannel: no training data
"""

SYNTAX_ERROR = """\
  File "/opt/ml/code/train.py", line 3
    def main(:
             ^
SyntaxError: invalid syntax
"""

TORCHRUN = """\
[rank0]: Traceback (most recent call last):
Traceback (most recent call last):
  File "/opt/ml/code/train.py", line 12, in <module>
    loss.backward()
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB
E1201 19:40:01.123000 77 torch/distributed/elastic/multiprocessing/api.py:900] failed (exitcode: 1) local_rank: 0
Traceback (most recent call last):
  File "/opt/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
"""


def test_the_last_traceback_gives_the_exception() -> None:
    assert last_exception(TRACEBACK) == "ValueError: learning rate must be positive, got -1.0"
    assert last_exception(CHAINED) == "data.MissingChannel: no training data"
    assert last_exception(SYNTAX_ERROR) == "SyntaxError: invalid syntax"
    assert last_exception("no traceback here\njust output\n") is None
    assert last_exception("") is None


def test_torchruns_own_error_gives_way_to_the_workers() -> None:
    assert last_exception(TORCHRUN) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_a_multi_line_message_is_kept_and_a_bare_exception_too() -> None:
    stderr = "Traceback (most recent call last):\n  File \"t.py\", line 1\nKeyError: 'lr'\nsee the docs\n\nlater\n"
    assert last_exception(stderr) == "KeyError: 'lr'\nsee the docs"
    assert last_exception('Traceback (most recent call last):\n  File "t.py", line 1\nKeyboardInterrupt\n') == (
        "KeyboardInterrupt"
    )


def test_the_reason_is_exception_then_exit_code_then_command() -> None:
    assert failure_reason("train.py", 1, COMMAND, TRACEBACK) == (
        "ValueError: learning rate must be positive, got -1.0\n"
        "ExitCode 1\n"
        'Command "/opt/venv/bin/python train.py --epochs 3"'
    )


def test_without_a_traceback_the_exit_code_says_it_and_137_suggests_memory() -> None:
    assert failure_reason("train.py", 3, COMMAND, "bye\n").splitlines()[0] == "train.py exited with code 3"
    assert failure_reason("train.py", 137, COMMAND, "").splitlines() == [
        "train.py was killed (out of memory?): exit code 137",
        "ExitCode 137",
        'Command "/opt/venv/bin/python train.py --epochs 3"',
    ]
    assert failure_reason("train.py", 137, COMMAND, TRACEBACK).splitlines()[:2] == [
        "ValueError: learning rate must be positive, got -1.0",
        "killed (out of memory?)",
    ]


def test_the_reason_fits_in_1024_bytes_and_keeps_the_exit_code() -> None:
    huge = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: ' + "é" * 3000 + "\n"
    reason = failure_reason("train.py", 1, COMMAND + ["--x"] * 400, huge)
    assert len(reason.encode("utf-8")) <= 1024
    assert reason.startswith("ValueError: éé")
    assert '\nExitCode 1\nCommand "/opt/venv/bin/python train.py --epochs 3 --x' in reason


def test_a_failure_file_the_script_wrote_is_never_overwritten(tmp_path: Path) -> None:
    failure = tmp_path / "output" / "failure"
    before = file_state(failure)
    assert before is None
    failure.parent.mkdir()
    failure.write_text("my own reason: the data has no label column")
    assert report_failure(failure, "ValueError: x", before) is False
    assert failure.read_text() == "my own reason: the data has no label column"


def test_the_failure_file_is_written_when_absent_or_left_from_before(tmp_path: Path) -> None:
    failure = tmp_path / "failure"
    assert report_failure(failure, "ValueError: x\nExitCode 1", None) is True
    assert failure.read_text() == "ValueError: x\nExitCode 1"
    stale = file_state(failure)  # there before the script ran, and untouched by it
    assert report_failure(failure, "RuntimeError: y", stale) is True
    assert failure.read_text() == "RuntimeError: y"
