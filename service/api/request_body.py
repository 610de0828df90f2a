"""The app's request class: multipart file parts spooled to the data folder's scratch space, with a byte cap.

werkzeug spools each file part of a multipart body to a temporary file before a view sees it. Here those files are
unlinked temporary files in ``<data dir>/tmp`` (never left behind, even by a killed process) and each part is cut
off at the largest file the service accepts (``max(CONDENSE_MAX_TEACHER_BYTES, CONDENSE_MAX_UPLOAD_BYTES)``): a
request cannot fill the disk with a part that would be refused anyway; the 413 names the part's file.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from flask import Request

from service.context import service_context
from service.errors import ServiceError

__all__ = ["CondenseRequest"]


class _CappedFile:
    """A writable temporary file that refuses to grow past ``limit`` bytes."""

    def __init__(self, handle: IO[bytes], limit: int, filename: str | None) -> None:
        self._handle, self._limit, self._filename = handle, limit, filename or "a file part"
        self._written = 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > self._limit:
            self._handle.close()
            raise ServiceError(413, f"{self._filename}: over the {self._limit:,}-byte limit of one file")
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __iter__(self) -> Any:
        return iter(self._handle)


class CondenseRequest(Request):
    """Flask's request with file parts spooled to the scratch space, capped (see the module docstring)."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        settings = service_context().settings
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        handle = tempfile.TemporaryFile(prefix="req-part-", dir=settings.tmp_dir)  # noqa: SIM115 -- werkzeug closes it
        limit = max(settings.max_teacher_bytes, settings.max_upload_bytes)
        return _CappedFile(handle, limit, filename)  # type: ignore[return-value]
