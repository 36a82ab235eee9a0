"""The user's code into /opt/ml/code: from S3 (moto), from the network-isolation channel without any S3 call,
from a local tarball or directory, or already there — and never a half-written or escaping archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from optml.container.errors import UserError
from optml.container.paths import Paths
from optml.train.script.source import fetch_code

TRAIN_PY = b"print('hello from train.py')\n"


def make_tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "ml")


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*")) if directory.exists() else []


def test_a_local_tarball_is_extracted(tmp_path: Path, paths: Paths) -> None:
    tarball = make_tarball(tmp_path / "sourcedir.tar.gz", {"train.py": TRAIN_PY, "lib/util.py": b"X = 1\n"})
    said = fetch_code(str(tarball), paths, {}, None)
    assert said == f"extracted {tarball}"
    assert listing(paths.code_dir) == ["lib", "lib/util.py", "train.py"]
    assert (paths.code_dir / "train.py").read_bytes() == TRAIN_PY
    assert [p.name for p in paths.root.iterdir()] == ["code"]  # no staging directory left beside it


@pytest.mark.parametrize(
    ("members", "links", "refusal"),
    [
        ({"train.py": TRAIN_PY, "../escape.py": b"x"}, {}, "'../escape.py' would be written outside"),
        ({"train.py": TRAIN_PY, "/etc/escape.py": b"x"}, {}, "'/etc/escape.py' would be written outside"),
        ({"train.py": TRAIN_PY}, {"data": "../../../etc"}, "link 'data' -> '../../../etc' points outside"),
        ({"train.py": TRAIN_PY}, {"passwd": "/etc/passwd"}, "link 'passwd' -> '/etc/passwd' points outside"),
    ],
)
def test_an_archive_reaching_outside_is_refused_and_nothing_is_written(
    tmp_path: Path, paths: Paths, members: dict[str, bytes], links: dict[str, str], refusal: str
) -> None:
    tarball = make_tarball(tmp_path / "sourcedir.tar.gz", members, links)
    with pytest.raises(UserError) as refused:
        fetch_code(str(tarball), paths, {}, None)
    assert str(refused.value).startswith(f"the source archive {tarball} was not extracted: ")
    assert refusal in str(refused.value)
    assert listing(paths.code_dir) == []
    assert not (tmp_path / "escape.py").exists()
    assert [p.name for p in paths.root.iterdir()] == ["code"]


def test_a_truncated_archive_is_refused_whole(tmp_path: Path, paths: Paths) -> None:
    tarball = make_tarball(tmp_path / "sourcedir.tar.gz", {"train.py": TRAIN_PY * 5000, "b.py": b"y" * 50000})
    tarball.write_bytes(tarball.read_bytes()[:-200])
    with pytest.raises(UserError, match="cannot be extracted whole"):
        fetch_code(str(tarball), paths, {}, None)
    assert listing(paths.code_dir) == []


def test_a_populated_code_directory_is_used_as_it_is(paths: Paths) -> None:
    paths.code_dir.mkdir(parents=True)
    (paths.code_dir / "train.py").write_bytes(TRAIN_PY)
    # SDK v2 local mode mounts the source here and rewrites the hyperparameter to this path
    assert fetch_code("/opt/ml/code", paths, {}, None) == f"{paths.code_dir} already holds the code"
    assert fetch_code("s3://bucket/never/fetched.tar.gz", paths, {}, None).endswith("already holds the code")


def test_a_file_uri_directory_is_copied(tmp_path: Path, paths: Paths) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "train.py").write_bytes(TRAIN_PY)
    (source / "pkg" / "__init__.py").write_text("")
    assert fetch_code(f"file://{source}", paths, {}, None) == f"copied {source}"
    assert listing(paths.code_dir) == ["pkg", "pkg/__init__.py", "train.py"]


def test_no_code_anywhere_says_what_to_do(paths: Paths) -> None:
    with pytest.raises(UserError, match="is empty and no sagemaker_submit_directory says where the code is"):
        fetch_code(None, paths, {}, None)
    with pytest.raises(UserError, match="'/nowhere/src' is neither an s3:// URI nor a directory or file here"):
        fetch_code("/nowhere/src", paths, {}, None)


def test_an_s3_tarball_is_downloaded_and_extracted(tmp_path: Path, paths: Paths, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    tarball = make_tarball(tmp_path / "upload.tar.gz", {"train.py": TRAIN_PY, "requirements.txt": b"numpy\n"})
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket="jobs", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.upload_file(str(tarball), "jobs", "job-1/source/sourcedir.tar.gz")
        uri = "s3://jobs/job-1/source/sourcedir.tar.gz"
        assert fetch_code(uri, paths, {}, "us-west-2") == f"downloaded and extracted {uri}"
    assert listing(paths.code_dir) == ["requirements.txt", "train.py"]


def test_a_missing_s3_object_is_a_user_error_naming_it(paths: Paths, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="jobs")
        with pytest.raises(UserError, match=r"the source code at s3://jobs/missing.tar.gz could not be downloaded"):
            fetch_code("s3://jobs/missing.tar.gz", paths, {}, "us-east-1")
    assert listing(paths.code_dir) == []


def test_under_network_isolation_the_code_channel_is_used_and_s3_never_called(
    tmp_path: Path, paths: Paths, no_network: None, monkeypatch
) -> None:
    def no_boto3(*args: object, **kwargs: object) -> None:
        raise AssertionError("boto3 was asked for a client")

    monkeypatch.setattr(boto3, "client", no_boto3)
    make_tarball(paths.data_dir / "code" / "sourcedir.tar.gz", {"train.py": TRAIN_PY})
    said = fetch_code("s3://jobs/job-1/source/sourcedir.tar.gz", paths, {}, "us-west-2")
    assert said == f"extracted {paths.data_dir / 'code' / 'sourcedir.tar.gz'}"
    assert listing(paths.code_dir) == ["train.py"]
