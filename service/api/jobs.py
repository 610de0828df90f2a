"""``/jobs``: submit, list, show, cancel and delete jobs."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from service.api import API_PREFIX, api, api_jobs, api_user
from service.api.params import parse_json, refuse_repeated_parts, whole_number
from service.errors import ServiceError
from service.jobs.service import FILE_FIELDS, OPTIONAL_FILE_FIELDS
from storage import JOB_STATUSES

_JSON_FIELDS = frozenset({"teacher_upload", "positives_upload", "test_upload", "options"})
_MAX_JSON_BODY = 1024 * 1024


def _options_from_form(text: str | None) -> Any:
    if text is None or not text.strip():
        return {}
    return parse_json(text, "options")


def json_body() -> Any:
    """The request's JSON object (413 past 1 MiB, 400 for anything but an object)."""
    if (request.content_length or 0) > _MAX_JSON_BODY:
        raise ServiceError.field(413, "body", f"a JSON body is limited to {_MAX_JSON_BODY:,} bytes")
    body = parse_json(request.get_data(cache=False), "body")
    if not isinstance(body, dict):
        raise ServiceError(400, "the body must be a JSON object")
    return body


@api.post("/jobs")
def create_job() -> Any:
    """Submit a job: multipart files, or JSON naming earlier uploads (see :mod:`service.api`)."""
    jobs, user = api_jobs(), api_user()
    if request.mimetype == "multipart/form-data":
        jobs.quota_room(user, "positives", (request.content_length or 0) - 128 * 1024)  # before reading the body
        refuse_repeated_parts(("options", *FILE_FIELDS))
        options = _options_from_form(request.form.get("options"))
        names = FILE_FIELDS + OPTIONAL_FILE_FIELDS
        job = jobs.submit_files(user, options, {name: request.files.get(name) for name in names})
    elif request.is_json:
        body = json_body()
        unknown = sorted(set(body) - _JSON_FIELDS)
        if unknown:
            raise ServiceError(
                400,
                f"unknown field(s): {', '.join(unknown)}",
                [{"field": name, "reason": "unknown field"} for name in unknown],
            )
        jobs.parse_options(body.get("options"))
        jobs.check_limit(user)
        teacher_info = jobs.get_upload(user, body.get("teacher_upload"), field="teacher_upload")
        positives_upload = body.get("positives_upload")  # none: the no-labels mode
        positives_info = (
            None if positives_upload is None else jobs.get_upload(user, positives_upload, field="positives_upload")
        )
        test_info = None
        if body.get("test_upload") is not None:
            test_info = jobs.get_upload(user, body.get("test_upload"), field="test_upload")
        job = jobs.submit(user, body.get("options"), teacher_info, positives_info, test_info)
    else:
        raise ServiceError(
            415, "send multipart/form-data (teacher, positives, options) or JSON naming uploads (see openapi.json)"
        )
    response = jsonify(jobs.view(job))
    response.status_code = 201
    response.headers["Location"] = f"{API_PREFIX}/jobs/{job.id}"
    return response


@api.get("/jobs")
def list_jobs() -> Any:
    """The user's jobs, newest first (``?status=``, ``?limit=`` 1..1000, default 100)."""
    status = request.args.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        raise ServiceError.field(400, "status", f"must be one of {', '.join(JOB_STATUSES)}")
    limit = whole_number(request.args.get("limit"), "limit", default=100, minimum=1, maximum=1000)
    jobs = api_jobs()
    return jsonify({"jobs": [jobs.view(job) for job in jobs.list(api_user(), status, limit)]})


@api.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    """One job: status, stage, progress, ETA, metrics, error, inputs, options, artefacts."""
    jobs = api_jobs()
    return jsonify(jobs.view(jobs.get(api_user(), job_id)))


@api.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    """Cancel: a queued job at once (200), a running one within seconds (202). 409 if it has finished."""
    jobs = api_jobs()
    job = jobs.cancel(api_user(), job_id)
    return jsonify(jobs.view(job)), 200 if job.is_final else 202


@api.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    """Delete the job with its files. 409 while it is running (cancel it first)."""
    api_jobs().delete(api_user(), job_id)
    return Response(status=204)
