"""Where a job's and an upload's bytes live in the blob store: one prefix per job and per upload, so deleting
either is one ``delete_prefix``.

| key | what |
|---|---|
| ``uploads/<user>/<upload id>/data`` | the bytes of an upload (teacher or positives) |
| ``uploads/<user>/<upload id>/info.json`` | its file name, size, SHA-256, time (written last: marks it complete) |
| ``uploads/<user>/<upload id>/job.json`` | the job that took it: an upload is used by one job and deleted with it |
| ``jobs/<job id>/artifacts/<name>`` | the job's outputs (``student.onnx``, ``report.json``, ``report.html``) |
| ``jobs/<job id>/checkpoints/...`` | a running job's checkpoints, for a worker on another machine to resume from |
"""

from __future__ import annotations

import re

__all__ = [
    "HEX_ID_RE",
    "artifact_key",
    "checkpoint_prefix",
    "is_artifact_name",
    "job_prefix",
    "upload_prefix",
]

#: Job and upload ids: 32 lowercase hex digits.
HEX_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
_ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def artifact_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/artifacts/{name}"


def checkpoint_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def upload_prefix(owner: str, upload_id: str) -> str:
    return f"uploads/{owner}/{upload_id}/"


def is_artifact_name(name: str) -> bool:
    """Artefact names are plain file names: letters, digits, ``._-``, not starting with a dot."""
    return bool(_ARTIFACT_NAME_RE.match(name))
