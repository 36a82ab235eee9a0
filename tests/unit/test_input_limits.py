"""Input a job cannot read the way it is configured fails at the start with what to change; a channel that
will not fit in memory is named before it is loaded."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from optml.container.paths import Paths
from optml.train import memory
from optml.train.main import main, run
from tests.conftest import make_classification, make_opt_ml


def set_channels(root: Path, **channel: str) -> None:
    config = root / "input" / "config" / "inputdataconfig.json"
    channels = json.loads(config.read_text())
    channels["train"] |= channel
    config.write_text(json.dumps(channels))


def set_hosts(root: Path, *hosts: str) -> None:
    config = {"current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0"}
    (root / "input" / "config" / "resourceconfig.json").write_text(json.dumps(config))


def failure(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("OPTML_ROOT", str(root))
    code = main([])
    return code, (root / "output" / "failure").read_text()


def test_pipe_mode_cannot_be_loaded_into_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_opt_ml(tmp_path / "ml", None, None, {"epochs": "1", "data_loading": "memory"})
    (root / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({"train": {"TrainingInputMode": "Pipe", "ContentType": "text/csv"}})
    )
    assert failure(root, monkeypatch) == (
        1,
        "data_loading=memory cannot load channel 'train': Pipe mode delivers it as a FIFO to read once, as a"
        " stream; use data_loading=auto (or stream), or TrainingInputMode File",
    )


def test_a_sharded_channel_on_several_hosts_in_memory_mode_fails_before_reaching_any_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded whole, hosts holding different files would disagree on their steps and hang; this host never
    even tries to reach its peer (the test would hang, not fail, if it did)."""
    root = make_opt_ml(tmp_path / "ml", make_classification(60, 4, 2), None, {"epochs": "1", "data_loading": "memory"})
    set_channels(root, S3DistributionType="ShardedByS3Key")
    set_hosts(root, "algo-1", "algo-2")
    assert failure(root, monkeypatch) == (
        1,
        "data_loading=memory cannot train on channel 'train', ShardedByS3Key across 2 hosts: each host holds"
        " different files, which only the streaming path combines (statistics merged across hosts, steps"
        " agreed); use data_loading=auto (or stream), or FullyReplicated",
    )


def test_a_pipe_no_one_writes_fails_within_the_timeout_naming_the_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_opt_ml(tmp_path / "ml", None, None, {"epochs": "1", "pipe_read_timeout_seconds": "1"})
    (root / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({"train": {"TrainingInputMode": "Pipe", "ContentType": "text/csv"}})
    )
    code, reason = failure(root, monkeypatch)
    assert code == 1
    assert "channel 'train'" in reason and "pipe_read_timeout_seconds" in reason
    assert str(root / "input" / "data" / "train_0") in reason


def test_a_sharded_fastfile_channel_on_one_host_is_all_the_data_and_streams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    root = make_opt_ml(tmp_path / "ml", make_classification(60, 4, 2), None, {"epochs": "1"})
    set_channels(root, S3DistributionType="ShardedByS3Key", TrainingInputMode="FastFile")
    run(Paths(root=root))
    assert (root / "model" / "optml-model.json").is_file()
    assert (
        "data_loading=auto: reading the channels as streams (channel 'train' uses FastFile mode, which reads from"
        " S3 as training reads)" in caplog.text
    )


# ---- memory ----------------------------------------------------------------------------------------------


def fake_machine(
    root: Path, *, total_kb: int, available_kb: int, limit: int | None, usage: int = 0, cache: int = 0
) -> Path:
    """A /proc/meminfo and a cgroup v1 memory controller under `root`, as a container sees them; `cache` is
    the page cache the kernel can drop, which `usage` includes."""
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:        1 kB\nMemAvailable:   {available_kb} kB\n"
    )
    if limit is not None:
        cgroup = root / "sys" / "fs" / "cgroup" / "memory"
        cgroup.mkdir(parents=True)
        (cgroup / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (cgroup / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (cgroup / "memory.stat").write_text(f"cache 1000\ntotal_inactive_file {cache}\ntotal_rss 5\n")
    return root


def test_available_memory_is_the_container_limit_or_the_machine(tmp_path: Path) -> None:
    limited = fake_machine(
        tmp_path / "a", total_kb=16_000_000, available_kb=12_000_000, limit=400_000_000, usage=150, cache=100
    )
    assert memory.available_memory(limited) == memory.Memory(399_999_950, 400_000_000, "the container's memory limit")
    # cgroup v1 without a limit reports 2^63 rounded down to pages: the machine's memory is what counts
    unlimited = fake_machine(tmp_path / "b", total_kb=16_000_000, available_kb=12_000_000, limit=9223372036854771712)
    machine = memory.Memory(12_000_000 * 1024, 16_000_000 * 1024, "the machine's memory")
    assert memory.available_memory(unlimited) == machine
    # a limit with more free than the machine has: the machine's is what is left
    roomy = fake_machine(tmp_path / "c", total_kb=16_000_000, available_kb=1_000, limit=8_000_000_000)
    assert memory.available_memory(roomy) == memory.Memory(1_024_000, 16_384_000_000, "the machine's memory")
    assert memory.available_memory(tmp_path / "nothing") is None


def test_gzip_files_count_at_their_uncompressed_size(tmp_path: Path) -> None:
    path = tmp_path / "part.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3\n" * 100_000))
    assert memory.uncompressed_size(path) == 600_000
    plain = tmp_path / "part.csv"
    plain.write_bytes(b"1,2,3\n")
    assert memory.uncompressed_size(plain) == 6


def test_a_channel_that_will_not_fit_is_named_in_the_log_and_the_failure_file_while_it_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "train" / "part-0.csv"
    data.parent.mkdir()
    data.write_bytes(b"0.5,1.5,2.5\n" * 10_000)  # 120 kB: loading it takes about 480 kB
    machine = fake_machine(tmp_path / "host", total_kb=16_000_000, available_kb=12_000_000, limit=400_000, usage=0)
    failure_file = tmp_path / "output" / "failure"
    caplog.set_level(logging.WARNING, logger="optml.train.memory")
    expected = (
        "channel 'train' is 120 kB of data, and loading it takes about 4x that (480 kB), but only 400 kB of the"
        " container's memory limit (400 kB) is free: the job will probably be killed for memory (exit code 137)."
        " Use an instance type with more memory, or less data in the channel"
    )
    with memory.LoadingGuard(failure_file, root=machine) as guard:
        guard.check("train", [data])
        assert caplog.messages == [expected]
        # Killed here for memory, SageMaker would show this as the job's FailureReason:
        assert failure_file.read_text() == f"Probably out of memory while loading the data: {expected}"
    assert not failure_file.exists()  # loaded after all: no failure to report


def test_a_channel_that_fits_leaves_no_warning_and_no_failure_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "part-0.csv"
    data.write_bytes(b"0.5,1.5,2.5\n" * 10_000)
    machine = fake_machine(tmp_path / "host", total_kb=16_000_000, available_kb=12_000_000, limit=4_000_000_000)
    with memory.LoadingGuard(tmp_path / "failure", root=machine) as guard:
        guard.check("train", [data])
        assert not (tmp_path / "failure").exists()
    assert caplog.messages == []


def test_several_processes_on_a_host_need_the_memory_each_and_one_keeps_the_failure_file(tmp_path: Path) -> None:
    data = tmp_path / "part-0.csv"
    data.write_bytes(b"0.5,1.5,2.5\n" * 10_000)  # 120 kB: 480 kB to load, fits in 1 MB once but not twice
    machine = fake_machine(tmp_path / "host", total_kb=16_000_000, available_kb=12_000_000, limit=1_000_000)
    assert memory.fit_warning("train", [data], memory.available_memory(machine), processes=1) is None
    warning = memory.fit_warning("train", [data], memory.available_memory(machine), processes=3)
    assert (
        warning is not None
        and "loading it takes about 4x that in each of the 3 training processes on this host (1.4 MB)" in warning
    )
    failure_file = tmp_path / "failure"
    with memory.LoadingGuard(failure_file, processes=3, writes=False, root=machine) as other_process:
        other_process.check("train", [data])
    assert not failure_file.exists()  # the host's first process keeps it


def test_the_reason_stays_when_loading_fails(tmp_path: Path) -> None:
    data = tmp_path / "part-0.csv"
    data.write_bytes(b"0.5,1.5,2.5\n" * 10_000)
    machine = fake_machine(tmp_path / "host", total_kb=16_000_000, available_kb=12_000_000, limit=400_000)
    failure_file = tmp_path / "failure"
    with pytest.raises(MemoryError), memory.LoadingGuard(failure_file, root=machine) as guard:
        guard.check("train", [data])
        raise MemoryError  # what the job fails with is written over it by the caller; until then it stays
    assert failure_file.read_text().startswith("Probably out of memory while loading the data: channel 'train'")
