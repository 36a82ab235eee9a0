"""`optml build`: the plan (wheels for linux/amd64, build arguments, CPU or GPU variant) decided and checked
before anything runs; --dry-run runs nothing. The GPU variant is covered without its gigabytes of wheels: its
lock, its plan, its Dockerfile stage, and the trainer's fallback to the CPU where CUDA is absent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from optml.cli import build
from optml.cli.errors import CliError
from optml.cli.main import main
from tests.conftest import REPO


def pins_of(lock: str) -> dict[str, str]:
    """name -> the rest of its pin (`==1.2`, `===2.13.0`), names lowercased."""
    pins = {}
    for pin in build.read_lock(REPO / lock):
        name, operator, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(===?)(\S+)", pin).groups()  # type: ignore[union-attr]
        pins[name.lower()] = operator + version
    return pins


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files of a checkout that a build plan reads."""
    for name in ("Dockerfile", ".dockerignore", "requirements/image.lock", "requirements/image-gpu.lock"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pip, no base-image script, no Docker engine."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(build.docker_client, "connect", refuse)


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["build", "--context", str(REPO), "--dry-run", *args]) == 0
    plan: dict[str, object] = json.loads(capsys.readouterr().out)
    return plan


def test_dry_run_prints_the_cpu_plan_and_runs_nothing(
    nothing_runs: None, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = dry_run(capsys)
    assert plan["image"] == "optml:latest"
    assert plan["platform"] == "linux/amd64"
    assert plan["docker_build"] == {
        "tag": "optml:latest",
        "platform": "linux/amd64",
        "buildargs": {
            "BASE_IMAGE": "<what tools/base-image.sh prints>",
            "VARIANT": "cpu",
            "IMAGE_LOCK": "requirements/image.lock",
            "WHEELHOUSE": "wheelhouse",
        },
        "left_out_of_context": ["wheelhouse/gpu"],
    }
    assert plan["base_image"] == {"command": ["tools/base-image.sh"], "environment": {"PLATFORM": "linux/amd64"}}
    others, torch_download = plan["wheelhouse"]["downloads"]  # type: ignore[index]
    for command in (others, torch_download):
        # The image's Python and platform, whatever the host runs.
        assert "--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311" in command
        assert "--platform manylinux_2_36_x86_64" in command and "--platform manylinux2014_x86_64" in command
        assert "--no-deps" in command and "--dest wheelhouse " in command
    assert "torch" not in others and "numpy==2.4.6" in others
    assert torch_download.endswith("--extra-index-url https://download.pytorch.org/whl/cpu --no-deps torch==2.13.0+cpu")


def test_dry_run_prints_the_gpu_plan(nothing_runs: None, no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    plan = dry_run(capsys, "--gpu")
    assert plan["image"] == "optml:latest-gpu"
    assert plan["docker_build"]["buildargs"] == {  # type: ignore[index]
        "BASE_IMAGE": "<what tools/base-image.sh prints>",
        "VARIANT": "gpu",
        "IMAGE_LOCK": "requirements/image-gpu.lock",
        "WHEELHOUSE": "wheelhouse/gpu",
    }
    assert plan["docker_build"]["left_out_of_context"] == ["wheelhouse/*.whl"]  # type: ignore[index]
    others, torch_download = plan["wheelhouse"]["downloads"]  # type: ignore[index]
    assert "--dest wheelhouse/gpu " in others and "nvidia-cudnn-cu13==9.20.0.48" in others
    # PyPI's own linux wheel is the CUDA build: no extra index, and === so that a local +cpu wheel never fits.
    assert "--extra-index-url" not in torch_download
    assert torch_download.endswith("--no-deps torch===2.13.0")


def test_the_image_flag_names_the_tag(nothing_runs: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert dry_run(capsys, "--gpu", "--image", "optml:build-gpu")["image"] == "optml:build-gpu"


def test_no_dockerfile_says_to_run_it_in_a_checkout(
    tmp_path: Path, nothing_runs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--context", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"optml: error: no Dockerfile in {tmp_path}: optml build runs in a checkout of the optml repository;"
        " cd into one, or pass --context DIR\n"
    )


def test_another_platform_is_refused(nothing_runs: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--context", str(REPO), "--platform", "linux/arm64", "--dry-run"]) == 2
    assert "--platform linux/arm64: SageMaker runs linux/amd64 images only" in capsys.readouterr().err


def test_a_checkout_without_the_gpu_lock_is_named(checkout: Path, nothing_runs: None) -> None:
    (checkout / "requirements/image-gpu.lock").unlink()
    with pytest.raises(CliError, match="requirements/image-gpu.lock is missing from"):
        build.plan_build(checkout, gpu=True)


def test_the_platform_tags_stop_at_the_base_images_glibc() -> None:
    tags = build.platform_tags("linux/amd64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_37_x86_64" not in tags
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)


def test_the_torch_index_follows_the_pins_label() -> None:
    assert build.torch_index("torch==2.13.0+cpu") == "https://download.pytorch.org/whl/cpu"
    assert build.torch_index("torch===2.13.0") is None
    with pytest.raises(CliError, match="expected exactly one torch==VERSION"):
        build.torch_pin(["numpy==2.4.6"], "requirements/x.lock")


def test_a_filled_wheelhouse_is_kept(checkout: Path, nothing_runs: None, capsys: pytest.CaptureFixture[str]) -> None:
    plan = build.plan_build(checkout)
    plan.stamp_path.parent.mkdir(parents=True)
    plan.stamp_path.write_text(plan.stamp)
    build.fill_wheelhouse(plan)  # nothing_runs: no pip
    assert "wheelhouse/ holds requirements/image.lock for linux/amd64 already" in capsys.readouterr().err


def test_the_wheelhouse_is_filled_then_stamped_with_its_lock(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, ...]] = []

    def pip(command: tuple[str, ...], cwd: Path) -> int:
        assert cwd == checkout
        ran.append(tuple(command))
        return 0

    monkeypatch.setattr(build, "run_pip", pip)
    plan = build.plan_build(checkout, gpu=True)
    build.fill_wheelhouse(plan)
    assert ran == list(plan.downloads)
    assert json.loads((checkout / "wheelhouse/gpu/.complete").read_text()) == {
        "lock_sha256": plan.lock_sha256,
        "platform": "linux/amd64",
    }
    assert plan.wheelhouse_is_complete()
    # A changed lock is a wheelhouse to fill again.
    with (checkout / "requirements/image-gpu.lock").open("a") as lock:
        lock.write("# changed\n")
    assert not build.plan_build(checkout, gpu=True).wheelhouse_is_complete()


def test_a_failed_download_says_what_to_check(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "run_pip", lambda command, cwd: 1)
    plan = build.plan_build(checkout)
    with pytest.raises(CliError, match="pip could not download the wheels .exit code 1.*set PIP_INDEX_URL"):
        build.fill_wheelhouse(plan)
    assert not plan.stamp_path.exists()


@pytest.mark.parametrize(
    ("gpu", "inside", "outside"),
    [(False, "wheelhouse/a.whl", "wheelhouse/gpu/b.whl"), (True, "wheelhouse/gpu/b.whl", "wheelhouse/a.whl")],
)
def test_the_context_holds_one_variants_wheels(checkout: Path, gpu: bool, inside: str, outside: str) -> None:
    for wheel in ("wheelhouse/a.whl", "wheelhouse/gpu/b.whl", "notes.txt"):
        (checkout / wheel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / wheel).write_text("x")
    with build.build_context(build.plan_build(checkout, gpu=gpu)) as context, tarfile.open(fileobj=context) as tar:
        names = set(tar.getnames())
    assert inside in names and outside not in names
    assert "Dockerfile" in names and "notes.txt" not in names  # .dockerignore still applies


def test_a_failed_docker_build_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    events: list[dict[str, Any]] = [
        {"stream": "Step 1/2 : FROM optml-base:bookworm\n"},
        {"error": "x", "errorDetail": {"message": "COPY failed: file not found: wheelhouse\n"}},
    ]
    with pytest.raises(CliError, match="^docker build failed: COPY failed: file not found: wheelhouse$"):
        build.follow_build(events)
    assert capsys.readouterr().err == "Step 1/2 : FROM optml-base:bookworm\n"


def test_make_image_runs_optml_build() -> None:
    """One definition of the build: the Makefile's image targets (which `make test` and `make demo` use) call it."""
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "image", "image-gpu", "IMAGE=optml:x",
         "IMAGE_GPU=optml:x-gpu"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert plan == [
        ".venv/bin/python -m optml.cli build --image optml:x",
        ".venv/bin/python -m optml.cli build --gpu --image optml:x-gpu",
    ]


def test_the_gpu_lock_differs_from_the_cpu_lock_only_in_torch_and_its_cuda_libraries() -> None:
    cpu, gpu = pins_of("requirements/image.lock"), pins_of("requirements/image-gpu.lock")
    assert cpu.pop("torch") == "==2.13.0+cpu"
    assert gpu.pop("torch") == "===2.13.0"  # the same release, PyPI's CUDA build
    assert {name: gpu[name] for name in cpu} == cpu
    cuda_libraries = set(gpu) - set(cpu)
    assert all(re.match(r"(nvidia-|cuda-|triton$)", name) for name in cuda_libraries), cuda_libraries
    assert {"nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cublas", "nvidia-cuda-runtime", "triton"} <= cuda_libraries
    assert all(pin.startswith("==") for name, pin in gpu.items())


def test_the_dockerfile_builds_the_cpu_image_by_default_and_asks_for_gpus_in_the_gpu_one() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    assert {name: defaults[name] for name in ("VARIANT", "IMAGE_LOCK", "WHEELHOUSE")} == build.BuildPlan(
        REPO, build.CPU, "optml:latest", "linux/amd64", (), ""
    ).build_args
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)
    gpu_stage = next(stage for stage in stages if stage.startswith("${BASE_IMAGE} AS runtime-gpu"))
    assert "NVIDIA_VISIBLE_DEVICES=all" in gpu_stage
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=\S*compute", gpu_stage)
    cpu_stage = next(stage for stage in stages if stage.startswith("${BASE_IMAGE} AS runtime-cpu"))
    assert "NVIDIA" not in cpu_stage
    assert stages[-1].startswith("runtime-${VARIANT}\n")


def test_training_falls_back_to_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU image on a CPU instance (or with no driver) trains on the CPU in one process."""
    from optml.train.distributed import Topology, device_for, processes_per_host

    topology = Topology(("algo-1",), 0, processes_per_host=2, local_rank=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert device_for(topology) == torch.device("cpu")
    assert processes_per_host({}) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert device_for(topology) == torch.device("cuda:1")  # one process per GPU, each on its own
    assert processes_per_host({}) == 4


GPU_PROBE = {
    "torch": "2.13.0",
    "cuda": "13.0",
    "available": True,
    "devices": ["NVIDIA L4", "NVIDIA L4"],
    "matmul_on": "cuda:0",
    "trainer_device": "cuda:0",
    "processes_per_host": 2,
}


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"torch": "2.13.0", "cuda": "13.0", "available": False}, "sees no GPU: run on a GPU host with the NVIDIA"),
        ({**GPU_PROBE, "cuda": None}, "is a CPU build: build it with `optml build --gpu`"),
        ({**GPU_PROBE, "trainer_device": "cpu"}, "the trainer stays on the CPU"),
        ({**GPU_PROBE, "processes_per_host": 1}, "would not start one process per GPU"),
    ],
)
def test_the_gpu_check_fails_clearly_without_cuda(probe: dict[str, object], message: str) -> None:
    """tools/gpu_check.py runs on GPU hosts only; its verdict on what the image reports is checked here."""
    from tools import gpu_check

    gpu_check.check_probe(GPU_PROBE)
    with pytest.raises(gpu_check.CheckFailed, match=re.escape(message)):
        gpu_check.check_probe(probe)
