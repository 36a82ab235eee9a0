"""On a GPU host: check that the GPU image (`optml build --gpu`, optml:latest-gpu) trains on CUDA and serves.

Not part of the test suite (CI has no GPU, and the image's CUDA wheels are gigabytes): run it by hand, or with
`make gpu-check`, wherever a GPU is, e.g. a g5/g6 EC2 instance with the NVIDIA driver (580 or newer, for the
image's CUDA 13.0 build of torch) and the NVIDIA container toolkit::

    python tools/gpu_check.py --image optml:latest-gpu

Three steps, each in a container that gets every GPU (`docker run --gpus all`):

1. CUDA in the image: torch sees the GPUs, computes on one, and the trainer's device and process count are
   the GPU's (one process per GPU), not the CPU fallback;
2. a training job on the bundled breast-cancer data: it exits 0 and leaves a model and evaluation.json;
3. that model served: /ping, then /invocations answers one prediction per CSV row. (The server predicts on
   the CPU, which is what serve/ does on every instance; this checks that the GPU image serves.)

It fails at the first step that does not hold, with what to check; without a GPU it fails at step 1 (or before
it, when the engine cannot hand out GPUs). Progress on stderr; on success, a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "breast_cancer"
HYPERPARAMETERS = {"epochs": "20", "hidden_units": "64,32", "batch_size": "64", "learning_rate": "0.003"}
PROBE = """
import json, torch
from optml.train.distributed import Topology, device_for, processes_per_host
result = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if result["available"]:
    result["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    x = torch.randn(512, 512, device="cuda")
    result["matmul_on"] = str((x @ x).device)
    result["trainer_device"] = str(device_for(Topology(("algo-1",), 0)))
    result["processes_per_host"] = processes_per_host({})
print(json.dumps(result))
"""
NO_GPU_HINT = (
    "run on a GPU host with the NVIDIA driver (580 or newer: the image's torch is built with CUDA 13.0) and the"
    " NVIDIA container toolkit, so that `docker run --gpus all IMAGE` sees the GPUs"
)


class CheckFailed(Exception):
    """A step that did not hold: what was seen and what to check."""


def say(message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


def check_probe(result: dict[str, Any]) -> None:
    """The image's view of CUDA, as PROBE prints it."""
    if not result.get("available"):
        raise CheckFailed(f"torch {result.get('torch')} (CUDA {result.get('cuda')}) sees no GPU: {NO_GPU_HINT}")
    if not result.get("cuda"):
        raise CheckFailed(f"torch {result['torch']} in the image is a CPU build: build it with `optml build --gpu`")
    if result.get("matmul_on") != "cuda:0" or result.get("trainer_device") != "cuda:0":
        raise CheckFailed(f"CUDA is available but the computation or the trainer stays on the CPU: {result}")
    if result.get("processes_per_host") != len(result.get("devices") or []):
        raise CheckFailed(f"the trainer would not start one process per GPU: {result}")


def gpus() -> list[Any]:
    import docker

    return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]


def run_to_end(client: Any, image: str, timeout_s: float, **options: Any) -> tuple[int, str]:

    container = start(client, image, **options)
    try:
        status = container.wait(timeout=timeout_s)["StatusCode"]
        return int(status), container.logs().decode("utf-8", errors="replace")
    finally:
        container.remove(force=True)


def start(client: Any, image: str, **options: Any) -> Any:
    """A started container with every GPU; created and started apart, so that one the engine cannot start
    (no GPU support) is removed, not left behind."""
    import docker

    container = client.containers.create(image, device_requests=gpus(), **options)
    try:
        container.start()
    except docker.errors.APIError as error:
        container.remove(force=True)
        if "device driver" in str(error):  # could not select device driver "" with capabilities: [[gpu]]
            raise CheckFailed(f"the Docker engine cannot give containers GPUs ({error}): {NO_GPU_HINT}") from None
        raise
    return container


def probe_cuda(client: Any, image: str) -> dict[str, Any]:
    say("1/3 CUDA in the image")
    status, logs = run_to_end(client, image, 300, entrypoint=["python", "-c", PROBE])
    if status != 0:
        raise CheckFailed(f"the CUDA probe exited with {status}:\n{logs}")
    result: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
    check_probe(result)
    say(f"torch {result['torch']}, CUDA {result['cuda']}, {', '.join(result['devices'])}")
    return result


def make_job(root: Path) -> Path:
    """A /opt/ml tree for a training job on the bundled data."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    channels = {}
    for channel in ("train", "validation"):
        shutil.copytree(DATA / channel, root / "input" / "data" / channel)
        channels[channel] = {"ContentType": "text/csv", "TrainingInputMode": "File"}
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for folder in ("model", "output/data"):
        (root / folder).mkdir(parents=True)
    root.chmod(0o777)
    return root


def train(client: Any, image: str, root: Path) -> dict[str, Any]:
    say("2/3 a training job on the GPUs")
    started = time.monotonic()
    status, logs = run_to_end(client, image, 900, command=["train"], volumes={str(root): {"bind": "/opt/ml"}})
    if status != 0:
        raise CheckFailed(f"training exited with {status}:\n{logs}")
    evaluation = root / "output" / "data" / "evaluation.json"
    if not any((root / "model").iterdir()) or not evaluation.is_file():
        raise CheckFailed(f"training exited 0 but left no model or no evaluation.json:\n{logs}")
    say(f"trained in {time.monotonic() - started:.1f} s")
    result: dict[str, Any] = json.loads(evaluation.read_text())
    return result


def serve(client: Any, image: str, model: Path, deadline_s: float = 120) -> int:
    import requests

    say("3/3 the model served")
    container = start(
        client, image, command=["serve"], ports={"8080/tcp": ("127.0.0.1", None)},
        volumes={str(model): {"bind": "/opt/ml/model", "mode": "ro"}},
    )  # fmt: skip
    try:
        container.reload()
        url = f"http://127.0.0.1:{container.ports['8080/tcp'][0]['HostPort']}"
        started = time.monotonic()
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            container.reload()
            if container.status == "exited" or time.monotonic() - started > deadline_s:
                raise CheckFailed(f"the server was not healthy within {deadline_s} s:\n{container.logs().decode()}")
            time.sleep(0.2)
        rows = [line.split(",", 1)[1] for line in (DATA / "validation" / "validation.csv").read_text().splitlines()]
        answer = requests.post(
            f"{url}/invocations",
            data="\n".join(rows),
            timeout=60,
            headers={"Content-Type": "text/csv", "Accept": "application/json"},
        )
        if answer.status_code != 200:
            raise CheckFailed(f"/invocations answered {answer.status_code}: {answer.text[:500]}")
        predictions = answer.json().get("predictions") or []
        if len(predictions) != len(rows):
            raise CheckFailed(f"{len(rows)} rows sent, {len(predictions)} predictions back: {answer.text[:500]}")
        say(f"{len(predictions)} predictions")
        return len(predictions)
    finally:
        container.remove(force=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="optml:latest-gpu", help="the GPU image (default optml:latest-gpu)")
    args = parser.parse_args(argv)
    import docker

    try:
        client = docker.from_env(timeout=900)
        client.images.get(args.image)
        cuda = probe_cuda(client, args.image)
        with tempfile.TemporaryDirectory(prefix="optml-gpu-check-") as scratch:
            root = make_job(Path(scratch) / "ml")
            evaluation = train(client, args.image, root)
            predictions = serve(client, args.image, root / "model")
    except docker.errors.ImageNotFound:
        say(f"FAILED: no image {args.image}: build it with `optml build --gpu` (or make image-gpu)")
        return 1
    except docker.errors.DockerException as error:
        say(f"FAILED: Docker: {error}")
        return 1
    except CheckFailed as failure:
        say(f"FAILED: {failure}")
        return 1
    print(json.dumps({"image": args.image, "cuda": cuda, "evaluation": evaluation, "predictions": predictions}))
    say("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
