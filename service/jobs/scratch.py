"""The web processes' scratch space and the data folder's permissions.

Scratch folders are ``<data dir>/tmp/req-<pid>-<random>``: a request's files while they are checked, removed when the
request ends. A web worker killed with ``kill -9`` cannot remove its own, so :func:`sweep_scratch` removes the
folders of processes that no longer run: gunicorn's master calls it before it starts workers (all of them) and every
worker at start (those of dead processes, e.g. the worker it replaces). Multipart file parts are spooled to
unlinked temporary files in the same folder (:mod:`service.api.request_body`), which vanish with the process.

:func:`make_private` sets the process's umask to 077 and the data folder to 0700, so the database, uploads,
artefacts and scratch files are created readable by the service's user only (0600 files, 0700 folders).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["make_private", "scratch_folder", "sweep_scratch", "sweep_upload_temporaries"]

logger = logging.getLogger(__name__)

_SCRATCH_RE = re.compile(r"^req-(\d+)-")


def make_private(data_dir: Path) -> None:
    """umask 077 for this process; the data folder (created if missing) 0700, its top-level entries 0700 / 0600."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in (data_dir, *data_dir.iterdir()):
        if path.is_symlink():
            continue
        with contextlib.suppress(OSError):  # owned by someone else (a mounted volume): leave it
            path.chmod(0o700 if path.is_dir() else 0o600)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_scratch(tmp_dir: Path, *, all_folders: bool = False) -> int:
    """Remove scratch folders of processes that no longer run (every one with ``all_folders``); how many."""
    if not tmp_dir.is_dir():
        return 0
    removed = 0
    for entry in tmp_dir.iterdir():
        match = _SCRATCH_RE.match(entry.name)
        if not entry.name.startswith("req-"):
            continue
        if all_folders or match is None or not _alive(int(match.group(1))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d scratch folder(s) left in %s", removed, tmp_dir)
    return removed


def sweep_upload_temporaries(blob_url: str) -> int:
    """Remove the temporary files of uploads that were being written when a web process died (local blobs only).

    Call it only when no web process runs (gunicorn's master before its workers): a running upload writes one.
    """
    if not blob_url.startswith("file://"):
        return 0  # S3: an upload becomes an object only when it is complete
    uploads = Path(blob_url.removeprefix("file://")) / "uploads"
    if not uploads.is_dir():
        return 0
    removed = 0
    for path in uploads.rglob(".*.tmp\\"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d unfinished upload file(s) under %s", removed, uploads)
    return removed


@contextlib.contextmanager
def scratch_folder(tmp_dir: Path) -> Iterator[Path]:
    """A fresh folder in the scratch space, named after this process, removed afterwards."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"req-{os.getpid()}-", dir=tmp_dir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
