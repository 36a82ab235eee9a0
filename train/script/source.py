"""The user's code into /opt/ml/code, from wherever `sagemaker_submit_directory` says it is.

- `s3://…/sourcedir.tar.gz`: downloaded with boto3 — unless the job runs under network isolation, where
  SageMaker delivers the same tarball as channel `code` (/opt/ml/input/data/code/sourcedir.tar.gz) and no S3
  call may be tried: that file, when present, is used instead.
- a local `.tar.gz` (a path or `file://`), or a `file://` directory (copied).
- `/opt/ml/code` itself (SDK v2 local mode mounts the source there and rewrites the hyperparameter to it).

As the toolkit does, nothing is fetched when /opt/ml/code already holds files. Tarballs are extracted with
`safe_extract` (no absolute names, no `..`, no links out) into a temporary sibling first and moved into place
only when whole, so a refused or corrupt archive leaves /opt/ml/code untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from optml.container.archive import ArchiveError, safe_extract
from optml.container.errors import UserError
from optml.container.paths import Paths

log = logging.getLogger(__name__)

CODE_CHANNEL = "code"
SOURCE_TARBALL = "sourcedir.tar.gz"


def fetch_code(submit_directory: str | None, paths: Paths, env: Mapping[str, str], region: str | None) -> str:
    """Make /opt/ml/code hold the user's code; a sentence saying where it came from, for the log."""
    code_dir = paths.code_dir
    if _populated(code_dir):
        return f"{code_dir} already holds the code"
    isolated = paths.channel_dir(CODE_CHANNEL) / SOURCE_TARBALL
    if isolated.is_file():
        _extract(isolated, code_dir)
        return f"extracted {isolated}"
    if not submit_directory:
        raise UserError(
            f"{code_dir} is empty and no sagemaker_submit_directory says where the code is: pass source_dir (or"
            " entry_point) to the estimator, or put the code in the image under /opt/ml/code"
        )
    if submit_directory.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="optml-source-") as scratch:
            tarball = Path(scratch) / SOURCE_TARBALL
            download_s3(submit_directory, tarball, env, region)
            _extract(tarball, code_dir)
        return f"downloaded and extracted {submit_directory}"
    local = Path(urlparse(submit_directory).path if submit_directory.startswith("file://") else submit_directory)
    return _from_local(local, code_dir, submit_directory)


def _populated(directory: Path) -> bool:
    return directory.is_dir() and any(directory.iterdir())


def _from_local(local: Path, code_dir: Path, named: str) -> str:
    if local.is_dir():
        if local.resolve() != code_dir.resolve():
            shutil.copytree(local, code_dir, dirs_exist_ok=True)
            return f"copied {local}"
        return f"{code_dir} is the source directory"
    if local.is_file():
        _extract(local, code_dir)
        return f"extracted {local}"
    raise UserError(f"sagemaker_submit_directory {named!r} is neither an s3:// URI nor a directory or file here")


def _extract(tarball: Path, code_dir: Path) -> None:
    """All of the tarball into code_dir, or nothing: it is unpacked beside code_dir, then moved in."""
    code_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".code-", dir=code_dir.parent))
    try:
        safe_extract(tarball, staging)
        for entry in staging.iterdir():
            os.replace(entry, code_dir / entry.name)
    except ArchiveError as error:
        raise UserError(f"the source archive {tarball} was not extracted: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_s3(uri: str, destination: Path, env: Mapping[str, str], region: str | None) -> None:
    """s3://bucket/key to `destination`. boto3 is imported here: no other path of the job needs it."""
    import boto3
    import botocore.exceptions

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    client = boto3.client(
        "s3",
        region_name=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        endpoint_url=env.get("S3_ENDPOINT_URL") or None,
    )
    log.info("downloading %s", uri)
    try:
        client.download_file(bucket, key, str(destination))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise UserError(f"the source code at {uri} could not be downloaded: {error}") from None
