"""Multi-model endpoints: load, list, describe, invoke, unload; budgets, conflicts, unsafe archives."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from optml.container.archive import UnsafeArchive, safe_extract
from optml.container.artifact import Predictions, load_model
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.multimodel import ModelRegistry
from tests.conftest import make_classification
from tests.unit.test_serving_app import EchoModel

ROWS = make_classification(4, 4, 2, seed=31)[:, 1:]
CSV = "\n".join(",".join(map(repr, row)) for row in ROWS.tolist())


def tar_model(model_dir: Path, tarball: Path) -> Path:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as archive:
        for path in sorted(model_dir.iterdir()):
            archive.add(path, arcname=path.name)
    return tarball


@pytest.fixture
def models_root(tmp_path: Path, trained_binary_model: Path) -> Path:
    """/opt/ml/models as SageMaker fills it: one model as a directory, one as a tarball."""
    root = tmp_path / "models"
    shutil.copytree(trained_binary_model, root / "alpha" / "model")
    tar_model(trained_binary_model, root / "beta" / "model.tar.gz")
    return root


def registry_client(root: Path, budget: int = 1 << 30) -> tuple[ModelRegistry, FlaskClient]:
    registry = ModelRegistry(root, budget, BuiltinModel.load, scratch_dir=root.parent)
    return registry, create_app(None, registry=registry).test_client()


@pytest.fixture
def client(models_root: Path) -> FlaskClient:
    return registry_client(models_root)[1]


def test_load_invoke_list_describe_unload(client: FlaskClient, models_root: Path, trained_binary_model: Path) -> None:
    assert client.get("/ping").status_code == 200  # healthy with no model loaded
    for name, url in (("alpha", str(models_root / "alpha" / "model")), ("beta", "beta/model.tar.gz")):
        response = client.post("/models", json={"model_name": name, "url": url})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["modelName"] == name

    expected = [str(label) for label in load_model(trained_binary_model).predict(ROWS).labels]
    for name in ("alpha", "beta"):
        response = client.post(
            f"/models/{name}/invoke", data=CSV, headers={"Content-Type": "text/csv", "Accept": "text/csv"}
        )
        assert response.get_data(as_text=True).splitlines() == expected
    response = client.post(
        "/invocations",
        data=CSV,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": "beta"},
    )
    assert response.get_data(as_text=True).splitlines() == expected

    listing = client.get("/models").get_json()
    assert [m["modelName"] for m in listing["models"]] == ["alpha", "beta"]
    assert "nextPageToken" not in listing
    description = client.get("/models/beta").get_json()
    assert (description["modelUrl"], description["featureCount"]) == ("beta/model.tar.gz", 4)

    assert client.delete("/models/alpha").status_code == 200
    assert client.get("/models/alpha").status_code == 404
    response = client.post("/models/alpha/invoke", data=CSV, headers={"Content-Type": "text/csv"})
    assert response.status_code == 404
    assert response.get_json() == {"error": "model_not_found", "message": "model 'alpha' is not loaded"}
    assert client.delete("/models/alpha").status_code == 404


def test_listing_is_paginated(models_root: Path) -> None:
    _, client = registry_client(models_root)
    for index in range(5):
        assert client.post("/models", json={"model_name": f"m{index}", "url": "alpha/model"}).status_code == 200
    first = client.get("/models?limit=2").get_json()
    assert [m["modelName"] for m in first["models"]] == ["m0", "m1"]
    second = client.get(f"/models?limit=2&next_page_token={first['nextPageToken']}").get_json()
    third = client.get(f"/models?limit=2&next_page_token={second['nextPageToken']}").get_json()
    assert [m["modelName"] for m in second["models"] + third["models"]] == ["m2", "m3", "m4"]
    assert "nextPageToken" not in third
    response = client.get("/models?limit=0")
    assert response.status_code == 400
    assert response.get_json()["message"] == "limit='0': expected an integer from 1 to 1000"


def test_loading_twice_is_409_and_over_budget_is_507(models_root: Path) -> None:
    weights = (models_root / "alpha" / "model" / "model.safetensors").stat().st_size
    _, client = registry_client(models_root, budget=weights + weights // 2)  # room for one model
    assert client.post("/models", json={"model_name": "a", "url": "alpha/model"}).status_code == 200
    conflict = client.post("/models", json={"model_name": "a", "url": "alpha/model"})
    assert conflict.status_code == 409
    assert conflict.get_json() == {"error": "conflict", "message": "model 'a' is already loaded"}
    full = client.post("/models", json={"model_name": "b", "url": "beta/model.tar.gz"})
    assert full.status_code == 507
    assert "unload a model first" in full.get_json()["message"]
    assert client.delete("/models/a").status_code == 200
    assert client.post("/models", json={"model_name": "b", "url": "beta/model.tar.gz"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model_name": "x"}, 'POST /models needs a JSON body {"model_name": "...", "url": "..."}'),
        ({"model_name": "x", "url": "/etc"}, "url '/etc' must be a path under"),
        ({"model_name": "x", "url": "../../etc"}, "url '../../etc' must be a path under"),
        ({"model_name": "x", "url": "nowhere"}, "url 'nowhere': no such file or directory"),
        ({"model_name": "x", "url": "a\x00b"}, "is not a usable path"),
        ({"model_name": "a/b", "url": "alpha/model"}, "model_name must be 1-256 printable characters"),
        ({"model_name": "broken", "url": "broken"}, "cannot load model 'broken': "),
    ],
)
def test_bad_load_requests_are_400(client: FlaskClient, models_root: Path, body: dict[str, str], message: str) -> None:
    (models_root / "broken").mkdir()
    (models_root / "broken" / "optml-model.json").write_text("{not json")
    (models_root / "broken" / "model.safetensors").write_bytes(b"")
    response = client.post("/models", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["message"]
    assert client.get("/models").get_json() == {"models": []}


def test_one_failing_model_does_not_affect_the_others(models_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry, client = registry_client(models_root)
    for name in ("good", "bad"):
        client.post("/models", json={"model_name": name, "url": "alpha/model"})

    def explode(features: np.ndarray) -> Predictions:
        raise RuntimeError("bad model internals")

    bad_model = registry.get("bad").model
    assert isinstance(bad_model, BuiltinModel)
    bad_model.artifact.predict = explode  # type: ignore[method-assign]
    bad = client.post("/models/bad/invoke", data=CSV, headers={"Content-Type": "text/csv"})
    assert bad.status_code == 500
    assert b"internals" not in bad.data
    good = client.post("/models/good/invoke", data=CSV, headers={"Content-Type": "text/csv"})
    assert good.status_code == 200
    assert client.get("/ping").status_code == 200


def _tar_with(tarball: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(tarball, "w:gz") as archive:
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return tarball


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    return member


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("/etc/evil"), "'/etc/evil' would be written outside"),
        (_member("../evil"), "'../evil' would be written outside"),
        (_member("a/../../evil"), "would be written outside"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link 'link' -> '/etc/passwd' points outside"),
        (_member("link", tarfile.SYMTYPE, "../../x"), "points outside"),
        (_member("hard", tarfile.LNKTYPE, "../x"), "points outside"),
        (_member("fifo", tarfile.FIFOTYPE), "'fifo' is not a regular file or directory"),
    ],
)
def test_unsafe_archives_are_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    tarball = _tar_with(tmp_path / "model.tar.gz", member, b"x")
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(UnsafeArchive, match=message.replace("(", r"\(")):
        safe_extract(tarball, destination)
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_unsafe_archive_load_is_400_and_leaves_nothing_behind(models_root: Path) -> None:
    _tar_with(models_root / "evil.tar.gz", _member("../escape"), b"x")
    registry, client = registry_client(models_root)
    response = client.post("/models", json={"model_name": "evil", "url": "evil.tar.gz"})
    assert response.status_code == 400
    assert "cannot extract evil.tar.gz: '../escape' would be written outside" in response.get_json()["message"]
    assert not list(models_root.parent.glob("optml-model-*"))  # the scratch extraction was removed


def test_a_truncated_archive_is_a_400_never_a_partial_model(models_root: Path) -> None:
    whole = (models_root / "beta" / "model.tar.gz").read_bytes()
    (models_root / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])  # an upload cut short
    registry, client = registry_client(models_root)
    response = client.post("/models", json={"model_name": "cut", "url": "cut.tar.gz"})
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        "cannot extract cut.tar.gz: cut.tar.gz cannot be extracted whole"
        " (Compressed file ended before the end-of-stream marker was reached)"
    )
    assert not list(models_root.parent.glob("optml-model-*"))
    assert client.get("/models/cut").status_code == 404


def test_a_symlink_inside_the_archive_is_fine(tmp_path: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        data = tarfile.TarInfo("weights.bin")
        data.size = 3
        archive.addfile(data, io.BytesIO(b"abc"))
        archive.addfile(_member("sub/alias", tarfile.SYMTYPE, "../weights.bin"))
    safe_extract(tarball, tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "alias").read_bytes() == b"abc"


def test_invocations_without_a_target_model_say_where_to_go(client: FlaskClient) -> None:
    response = client.post("/invocations", data=CSV, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert "POST /models/<name>/invoke" in response.get_json()["message"]


def test_the_registry_holds_any_kind_of_served_model(tmp_path: Path) -> None:
    (tmp_path / "echo").mkdir()
    registry = ModelRegistry(tmp_path, 1 << 20, lambda model_dir: EchoModel(), scratch_dir=tmp_path)
    client = create_app(None, registry=registry).test_client()
    assert client.post("/models", json={"model_name": "e", "url": "echo"}).status_code == 200
    description = client.get("/models/e").get_json()
    assert description == {"modelName": "e", "modelUrl": "echo", "kind": "echo", "memoryBytes": 0}
    response = client.post("/models/e/invoke", data=b"x", headers={"Content-Type": "application/x-thing"})
    assert (response.status_code, response.data) == (200, b"echo:x")
