"""`optml build`: the image from a checkout, for linux/amd64 on any machine — the one definition of the build,
which `make image` runs too.

Three steps. The lock's wheels are downloaded for the image's platform, not the host's, into the wheelhouse;
a wheelhouse that already holds them is kept, so one copied into an air-gapped network builds offline.
tools/base-image.sh picks the base image. `docker build` installs from the wheelhouse alone. `--gpu` builds the
CUDA variant from its own lock and wheelhouse; `--dry-run` prints that plan and runs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from optml.cli import docker_client
from optml.cli.errors import CliError

# SageMaker runs linux/amd64 images only; the value maps to the wheels' CPU architecture.
PLATFORMS = {"linux/amd64": "x86_64"}
DEFAULT_PLATFORM = "linux/amd64"
# The base image is Debian bookworm: CPython 3.11 and glibc 2.36, so a manylinux wheel fits when it asks for
# glibc 2.36 or older. pip does not widen --platform manylinux_2_36 to the older tags itself: list them all.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
LEGACY_MANYLINUX = ("manylinux2014", "manylinux2010", "manylinux1")  # aliases of glibc 2.17, 2.12 and 2.5
TORCH_INDEX = "https://download.pytorch.org/whl/"  # + a local version label: cpu, cu128, ...
STAMP = ".complete"  # in the wheelhouse: which lock, for which platform, it holds
BASE_IMAGE_SCRIPT = "tools/base-image.sh"

EXAMPLES = """\
examples:
  optml build                          # optml:latest, in the checkout you are in
  optml build --gpu                    # optml:latest-gpu: the CUDA build of torch, for GPU instance types
  optml build --image optml:dev --context ~/src/optml
  optml build --wheelhouse-only        # download the wheels, then copy the checkout into an air-gapped network
  optml build --gpu --dry-run          # print the plan: pip commands, base image step, build arguments

The image is always linux/amd64, what SageMaker runs, also when built on an arm64 machine (Docker runs the
build's steps under emulation there)."""


@dataclass(frozen=True)
class Variant:
    """What differs between the CPU and the GPU image; paths are relative to the checkout."""

    name: str  # the Dockerfile's VARIANT
    lock: str
    wheelhouse: str
    image: str  # the default tag
    other_wheels: str  # the other variant's wheels: out of this build's context (gigabytes, for the GPU's)


CPU = Variant("cpu", "requirements/image.lock", "wheelhouse", "optml:latest", "wheelhouse/gpu")
GPU = Variant("gpu", "requirements/image-gpu.lock", "wheelhouse/gpu", "optml:latest-gpu", "wheelhouse/*.whl")


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build will do, decided before it does any of it."""

    context: Path
    variant: Variant
    image: str
    platform: str
    downloads: tuple[tuple[str, ...], ...]  # pip commands, run in the context
    lock_sha256: str

    @property
    def build_args(self) -> dict[str, str]:
        """The Dockerfile's arguments, but BASE_IMAGE: tools/base-image.sh names that when the build runs."""
        return {"VARIANT": self.variant.name, "IMAGE_LOCK": self.variant.lock, "WHEELHOUSE": self.variant.wheelhouse}

    @property
    def stamp(self) -> str:
        return json.dumps({"lock_sha256": self.lock_sha256, "platform": self.platform}, sort_keys=True)

    @property
    def stamp_path(self) -> Path:
        return self.context / self.variant.wheelhouse / STAMP

    def wheelhouse_is_complete(self) -> bool:
        return self.stamp_path.is_file() and self.stamp_path.read_text() == self.stamp

    def describe(self) -> dict[str, Any]:
        """The plan as --dry-run prints it."""
        return {
            "image": self.image,
            "platform": self.platform,
            "context": str(self.context),
            "wheelhouse": {
                "path": self.variant.wheelhouse,
                "lock": self.variant.lock,
                "complete": self.wheelhouse_is_complete(),
                "downloads": [shlex.join(command) for command in self.downloads],
            },
            "base_image": {"command": [BASE_IMAGE_SCRIPT], "environment": {"PLATFORM": self.platform}},
            "docker_build": {
                "tag": self.image,
                "platform": self.platform,
                "buildargs": {"BASE_IMAGE": f"<what {BASE_IMAGE_SCRIPT} prints>", **self.build_args},
                "left_out_of_context": [self.variant.other_wheels],
            },
        }


def platform_tags(platform: str) -> list[str]:
    """Every manylinux tag the base image runs, newest first."""
    arch = PLATFORMS[platform]
    return [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 4, -1)] + [
        f"{alias}_{arch}" for alias in LEGACY_MANYLINUX
    ]


def read_lock(lock: Path) -> list[str]:
    """The lock's pins, `name==version` one a line; comments and blank lines skipped."""
    pins = [line.split("#", 1)[0].strip() for line in lock.read_text().splitlines()]
    return [pin for pin in pins if pin]


def torch_pin(pins: Sequence[str], lock: str) -> str:
    found = [pin for pin in pins if re.match(r"torch===?[^=]", pin, re.IGNORECASE)]
    if len(found) != 1:
        raise CliError(f"{lock}: expected exactly one torch==VERSION (or torch===VERSION) line, found {len(found)}")
    return found[0]


def torch_index(pin: str) -> str | None:
    """PyTorch's index for the pin's local version label (torch==2.13.0+cpu -> .../whl/cpu); none without
    a label: a plain version (the GPU lock's, PyPI's CUDA build) is on the usual index."""
    label = pin.rpartition("=")[2].partition("+")[2]
    return TORCH_INDEX + label if label else None


def download_commands(variant: Variant, pins: Sequence[str], platform: str) -> tuple[tuple[str, ...], ...]:
    """pip download, for the image's Python and platform whatever the host's: everything but torch from the
    usual index, then torch alone, with PyTorch's index added when its pin has a label. Asking that index for
    every package would ask an index that has none of them, and where it is unreachable retry each one for
    seconds. --no-deps: the locks pin every package, so nothing is resolved, and pip never judges a
    dependency's markers by the host (it would drop torch's CUDA libraries on a Mac)."""
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    target = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi]
    for tag in platform_tags(platform):
        target += ["--platform", tag]
    pip = (sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--dest", variant.wheelhouse)
    torch = torch_pin(pins, variant.lock)
    index = torch_index(torch)
    extra_index = ("--extra-index-url", index) if index else ()
    others = (*pip, *target, "--no-deps", *(pin for pin in pins if pin != torch))
    return others, (*pip, *target, *extra_index, "--no-deps", torch)


def plan_build(
    context: Path, gpu: bool = False, platform: str = DEFAULT_PLATFORM, image: str | None = None
) -> BuildPlan:
    context = context.expanduser().resolve()
    if not (context / "Dockerfile").is_file():
        raise CliError(
            f"no Dockerfile in {context}: optml build runs in a checkout of the optml repository;"
            " cd into one, or pass --context DIR"
        )
    if platform not in PLATFORMS:
        raise CliError(
            f"--platform {platform}: SageMaker runs linux/amd64 images only, so optml builds linux/amd64"
            " (on any machine, an arm64 one too)"
        )
    variant = GPU if gpu else CPU
    lock = context / variant.lock
    if not lock.is_file():
        raise CliError(f"{variant.lock} is missing from {context}: is this an optml checkout?")
    downloads = download_commands(variant, read_lock(lock), platform)
    return BuildPlan(context, variant, image or variant.image, platform, downloads, _sha256(lock))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def say(message: str) -> None:
    """Progress, on stderr: stdout carries the result."""
    print(f"optml build: {message}", file=sys.stderr, flush=True)


def fill_wheelhouse(plan: BuildPlan) -> None:
    wheelhouse = plan.variant.wheelhouse
    if plan.wheelhouse_is_complete():
        say(f"{wheelhouse}/ holds {plan.variant.lock} for {plan.platform} already")
        return
    if find_spec("pip") is None:
        raise CliError(f"pip is not installed for {sys.executable}, which downloads the wheels: python -m ensurepip")
    say(f"downloading the wheels of {plan.variant.lock} for {plan.platform} into {wheelhouse}/")
    (plan.context / wheelhouse).mkdir(parents=True, exist_ok=True)
    for command in plan.downloads:
        status = run_pip(command, plan.context)
        if status != 0:
            raise CliError(
                f"pip could not download the wheels (exit code {status}, its messages are above); behind a"
                " proxy or with a private index, set PIP_INDEX_URL or PIP_EXTRA_INDEX_URL"
            )
    plan.stamp_path.write_text(plan.stamp)


def run_pip(command: Sequence[str], cwd: Path) -> int:
    return subprocess.run(command, cwd=cwd, stdout=sys.stderr).returncode


def find_base_image(plan: BuildPlan) -> str:
    """tools/base-image.sh's choice for the platform; its own messages go to stderr as they come."""
    script = plan.context / BASE_IMAGE_SCRIPT
    if not script.is_file():
        raise CliError(f"{BASE_IMAGE_SCRIPT} is missing from {plan.context}: is this an optml checkout?")
    environment = {**os.environ, "PLATFORM": plan.platform}
    result = subprocess.run([str(script)], cwd=plan.context, env=environment, stdout=subprocess.PIPE, text=True)
    name = result.stdout.strip()
    if result.returncode != 0 or not name:
        raise CliError(f"no base image for {plan.platform} ({BASE_IMAGE_SCRIPT} exit code {result.returncode})")
    return name


def build_context(plan: BuildPlan) -> IO[bytes]:
    """The context as a tar file: what .dockerignore lets in, less the other variant's wheels."""
    from docker.utils import tar

    ignore = plan.context / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    context: IO[bytes] = tar(str(plan.context), exclude=[*patterns, plan.variant.other_wheels], gzip=False)
    return context


def build_image(plan: BuildPlan, base_image: str) -> str:
    """docker build, its output streamed as it comes; the new image's id."""
    client = docker_client.connect()
    say(f"docker build of {plan.image} for {plan.platform} from {base_image}")
    with build_context(plan) as context:
        events = client.api.build(
            fileobj=context, custom_context=True, tag=plan.image, platform=plan.platform,
            buildargs={"BASE_IMAGE": base_image, **plan.build_args}, rm=True, forcerm=True, decode=True,
        )  # fmt: skip
        follow_build(events)
    image_id: str = client.images.get(plan.image).id
    return image_id


def follow_build(events: Iterable[dict[str, Any]]) -> None:
    for event in events:
        if "error" in event:
            message = (event.get("errorDetail") or {}).get("message") or event["error"]
            raise CliError(f"docker build failed: {message.strip()}")
        if "stream" in event:
            print(event["stream"], end="", file=sys.stderr, flush=True)
        elif event.get("status") and not event.get("progressDetail"):  # a pull's steps, not its byte counts
            print(" ".join(filter(None, (event.get("id"), event["status"]))), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    plan = plan_build(Path(args.context), gpu=args.gpu, platform=args.platform, image=args.image)
    if args.dry_run:
        print(json.dumps(plan.describe(), indent=2))
        return 0
    fill_wheelhouse(plan)
    if args.wheelhouse_only:
        print(f"wheelhouse  {plan.context / plan.variant.wheelhouse}")
        return 0
    image_id = build_image(plan, find_base_image(plan))
    print(f"image     {plan.image}\nplatform  {plan.platform}\nid        {image_id}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build the image for linux/amd64 from a checkout (the CPU or the GPU variant)",
        description="Build the optml image from a checkout of its repository, as `make image` does: the pinned"
        " wheels downloaded for linux/amd64, then a docker build that installs only those. Progress on stderr;"
        " the image's name and id on stdout.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--context", default=".", metavar="DIR", help="the checkout (default: this directory)")
    parser.add_argument(
        "--gpu", action="store_true", help="the CUDA variant (requirements/image-gpu.lock; tag optml:latest-gpu)"
    )
    parser.add_argument(
        "--platform", default=DEFAULT_PLATFORM, help="the image's platform: linux/amd64, the only one SageMaker runs"
    )
    parser.add_argument("--image", metavar="NAME:TAG", help="the tag (default optml:latest, or optml:latest-gpu)")
    parser.add_argument(
        "--wheelhouse-only", action="store_true", help="download the wheels and stop (for an air-gapped build)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON and run nothing")
    parser.set_defaults(run=run)
