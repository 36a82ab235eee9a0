"""Two real containers named like SageMaker's hosts (algo-1, algo-2) on one Docker network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import make_classification, make_opt_ml
from tests.docker.conftest import StartHost, wait_for_exit

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HYPERPARAMETERS = {"epochs": "3", "batch_size": "32", "hidden_units": "16", "learning_rate": "0.01", "seed": "5"}


def host_tree(root: Path, host: str, hosts: list[str]) -> Path:
    tree = make_opt_ml(
        root / host, make_classification(250, 4, 2, seed=1), make_classification(50, 4, 2, seed=2), HYPERPARAMETERS
    )
    (tree / "input/config/resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "ethwe"})  # as SDK v3 writes it
    )
    return tree


def test_two_hosts_reach_the_weights_of_one(tmp_path: Path, start_host: StartHost) -> None:
    single = host_tree(tmp_path / "single", "algo-1", ["algo-1"])
    status, logs = wait_for_exit(start_host("algo-1", single))
    assert status == 0, logs

    hosts = ["algo-1", "algo-2"]
    trees = {host: host_tree(tmp_path / "pair", host, hosts) for host in hosts}
    containers = {host: start_host(host, trees[host]) for host in reversed(hosts)}
    results = {host: wait_for_exit(container) for host, container in containers.items()}
    for host, (status, logs) in results.items():
        assert status == 0, f"{host}:\n{logs}"
    expected = load_file(str(single / "model/model.safetensors"))
    master_weights = load_file(str(trees["algo-1"] / "model/model.safetensors"))
    for key in expected:
        np.testing.assert_allclose(master_weights[key], expected[key], atol=1e-4, err_msg=key)
    assert not any((trees["algo-2"] / "model").iterdir())  # only the master writes the model
    assert results["algo-1"][1].count("epoch=3 ") == 1 and "epoch=" not in results["algo-2"][1]
    assert "network interface ethwe from resourceconfig.json does not exist here" in results["algo-2"][1]
    assert [p.name for p in (trees["algo-2"] / "checkpoints").glob("*.pt")]  # every host checkpoints itself


def test_a_peer_that_never_appears_fails_the_job_with_its_name(tmp_path: Path, start_host: StartHost) -> None:
    tree = host_tree(tmp_path, "algo-1", ["algo-1", "algo-2"])
    container = start_host("algo-1", tree, {"OPTML_PEER_WAIT_SECONDS": "3"})
    status, _ = wait_for_exit(container, timeout=120)
    assert status == 1
    assert (
        (tree / "output/failure")
        .read_text()
        .startswith("host 'algo-2' from resourceconfig.json never became reachable by name within 3 s")
    )
