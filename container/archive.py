"""Extracting a model.tar.gz safely: SageMaker and users hand us archives we did not write.

Shared by training (channel `model`, incremental training) and serving (multi-model endpoints)."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath


class ArchiveError(ValueError):
    """A tarball that cannot be extracted whole: corrupt or cut short."""


class UnsafeArchive(ArchiveError):
    """A tarball member would land outside the extraction directory, or is not a file or directory."""


def safe_extract(tarball: Path, destination: Path) -> None:
    """Extract `tarball` into `destination`, refusing absolute names, `..`, links that point outside,
    and devices or FIFOs — checked for every member before anything is written. Raises ArchiveError
    (UnsafeArchive for those refusals) for anything that stops the extraction: never a partial model."""
    try:
        _extract(tarball, destination.resolve())
    # A truncated upload ends in EOFError; a full disk (OSError) is not the archive's fault and is not caught.
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ArchiveError(f"{tarball.name} cannot be extracted whole ({error})") from None


def _extract(tarball: Path, root: Path) -> None:
    with tarfile.open(tarball, "r:*") as archive:
        members = archive.getmembers()
        for member in members:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise UnsafeArchive(f"{member.name!r} would be written outside the model directory")
            if member.issym() or member.islnk():
                base = root / path.parent if member.issym() else root
                target = (base / member.linkname).resolve()
                if PurePosixPath(member.linkname).is_absolute() or not target.is_relative_to(root):
                    raise UnsafeArchive(f"link {member.name!r} -> {member.linkname!r} points outside")
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchive(f"{member.name!r} is not a regular file or directory")
            if not (root / path).resolve().is_relative_to(root):
                raise UnsafeArchive(f"{member.name!r} would be written outside the model directory")
        # Python >= 3.11.4 adds its own checks ("data" filter); older 3.11 relies on the loop above.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(root, members=members, **extra)  # type: ignore[arg-type]
