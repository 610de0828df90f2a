"""The new-job form's files: uploaded once, kept across a refused form, or taken from an earlier job.

A file chosen in the form is stored as an upload (:meth:`JobService.store_upload`) before anything is checked, so a
refused form comes back with the file still attached (a hidden ``<field>_upload`` id) instead of asking for it
again; a file the refusal blames is not kept. "Re-run" and "clone with changes" copy an earlier job's inputs into
new uploads, so the new job keeps its files even when the old one is deleted. Uploads no job takes are removed
after ``CONDENSE_UPLOAD_TTL_S`` like API uploads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.errors import ServiceError
from service.jobs.service import FILE_FIELDS, JobService, UploadInfo
from storage import Job, User

__all__ = ["KEPT_SUFFIX", "copy_job_input", "form_terms", "resolve_files", "still_kept"]

KEPT_SUFFIX = "_upload"
"""``teacher_upload`` / ``positives_upload``: the hidden inputs carrying a kept upload's id."""

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def copy_job_input(service: JobService, user: User, job: Job, name: str) -> UploadInfo:
    """A new upload of ``user`` holding input ``name`` (teacher or positives) of ``job``."""
    item = job.spec.get("inputs", {}).get(name)
    if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
        raise ServiceError.field(400, name, f"job {job.id} has no {name} file to reuse")
    with service.blobs.open_read(item["key"]) as handle:
        return service.store_upload(user, handle, str(item.get("filename") or name), field=name)


def resolve_files(
    service: JobService, user: User, form: Mapping[str, Any], files: Mapping[str, Any], source: Job | None
) -> tuple[dict[str, UploadInfo], list[dict[str, str]]]:
    """Each file input as an upload: a newly chosen file, else the kept upload, else ``source``'s file.

    Returns the uploads found and the problems (``{"field", "reason"}``) of the inputs that have none.
    """
    found: dict[str, UploadInfo] = {}
    problems: list[dict[str, str]] = []
    for name in FILE_FIELDS:
        part = files.get(name)
        kept = str(form.get(name + KEPT_SUFFIX) or "").strip()
        try:
            if part is not None and part.filename:
                found[name] = service.store_upload(user, part.stream, part.filename, field=name)
            elif kept:
                found[name] = service.get_upload(user, kept, field=name)
            elif source is not None:
                found[name] = copy_job_input(service, user, source, name)
            else:
                problems.append({"field": name, "reason": "choose a file"})
        except ServiceError as error:
            problems.extend(error.fields or [{"field": name, "reason": error.message}])
    return found, problems


def still_kept(found: Mapping[str, UploadInfo], error: ServiceError) -> dict[str, UploadInfo]:
    """The uploads the refusal does not blame: the form keeps them."""
    blamed = {str(item.get("field", "")).removesuffix(KEPT_SUFFIX) for item in error.fields}
    return {name: info for name, info in found.items() if name not in blamed}


def form_terms(reason: str, labels: Mapping[str, str]) -> str:
    """A reason as the form words it: ``options.input_shape`` -> ``Input shape``, ``[3, 32, 32]`` -> ``3, 32, 32``."""
    text = _BRACKETS.sub(r"\1", reason)
    for name, label in sorted(labels.items(), key=lambda item: -len(item[0])):
        text = text.replace(f"options.{name}", label).replace(f"give {name} ", f"give the {label.lower()} ")
    return text
