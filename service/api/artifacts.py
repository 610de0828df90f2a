"""``GET /jobs/{id}/artifacts/{name}``: download an artefact (streamed, or a redirect to a presigned S3 URL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, redirect, send_file

from service.api import api, api_jobs, api_user
from service.errors import ServiceError
from service.jobs.service import is_artifact_name
from storage import BlobNotFoundError

_DOWNLOAD_CHUNK = 1024 * 1024
_PRESIGN_S = 300
_MEDIA_TYPES = {
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html",  # werkzeug adds "; charset=utf-8" to text/* itself
    ".txt": "text/plain",
    ".csv": "text/csv",
}


@api.get("/jobs/<job_id>/artifacts/<name>")
def get_artifact(job_id: str, name: str) -> Any:
    """Download an artefact: streamed, or a redirect to a short-lived presigned URL when blobs are on S3."""
    jobs = api_jobs()
    if not is_artifact_name(name):
        raise ServiceError(404, f"job {job_id} has no artefact {name!r}")
    artifact = jobs.artifact(api_user(), job_id, name)
    url = jobs.blobs.presigned_url(artifact.blob_key, expires_s=_PRESIGN_S)
    if url is not None:
        return redirect(url, code=302)
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    mimetype = _MEDIA_TYPES.get(suffix, "application/octet-stream")
    inline = suffix in (".html", ".json", ".txt")
    try:
        local = jobs.blobs.local_path(artifact.blob_key)
        if local is not None:
            response = send_file(
                local, mimetype=mimetype, as_attachment=not inline, download_name=name, etag=artifact.sha256, max_age=0
            )
        else:
            handle = jobs.blobs.open_read(artifact.blob_key)
            response = Response(_chunks(handle), mimetype=mimetype, direct_passthrough=True)
            response.headers["Content-Length"] = str(artifact.size)
            response.headers["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{name}"'
            response.set_etag(artifact.sha256)
    except BlobNotFoundError:
        raise ServiceError(404, f"the file of artefact {name!r} is missing") from None
    # Artefacts are generated from user input: never let one run as a page of this origin.
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Condense-SHA256"] = artifact.sha256
    return response


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_DOWNLOAD_CHUNK):
            yield chunk
