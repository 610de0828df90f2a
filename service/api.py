"""The JSON API, ``/api/v1``: jobs, uploads, events, artefacts, pools, health. Described in ``/api/v1/openapi.json``.

Thin views over :class:`~service.jobs.JobService`: each parses the request, calls one service method and shapes the
answer. Every request except ``GET /health`` and ``GET /openapi.json`` needs ``Authorization: Bearer <token>``
(tokens from ``condense token create``); GET requests without that header may carry the web pages' signed session
cookie instead (:mod:`service.web`: the job page's event stream and download links). A user sees only their own jobs
and uploads, and another user's job is a 404, exactly like a missing one. Errors are ``{"error": {"status",
"message", "fields"}}`` (see :mod:`service.errors` for the statuses).

Submitting a job, two ways:

- ``POST /jobs`` as ``multipart/form-data`` with the files ``teacher`` and ``positives`` and the form field
  ``options`` (a JSON object, optional). Simple, one request.
- ``POST /uploads`` once per file (the raw bytes as the body, ``?filename=`` to name it, or multipart with a ``file``
  part), each answering an upload id; then ``POST /jobs`` with a JSON body ``{"teacher_upload": id,
  "positives_upload": id, "options": {...}}``. For large files and clients that cannot stream multipart. An upload
  is used by one job and deleted with it; one no job takes is deleted after ``CONDENSE_UPLOAD_TTL_S``.

Either way every check (:mod:`service.validation`) runs before the job exists: nothing is queued that is sure to fail.

Events (``GET /jobs/{id}/events``) are server-sent events: each metadata event of the job as ``id:`` (its id),
``event:`` (its kind: ``status``, ``progress``, ``cancel_requested``) and ``data:`` (JSON). A client resumes with
``Last-Event-ID`` (browsers' ``EventSource`` does so itself) or ``?after=ID``. When the job is final the stream sends
``event: end`` with the job and closes; otherwise it closes after ``CONDENSE_SSE_MAX_S`` so a web thread is not held
forever (``EventSource`` reconnects), sending a ``: keep-alive`` comment every ``CONDENSE_SSE_KEEPALIVE_S``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify, redirect, request, send_file

from service.app import service_context
from service.errors import ServiceError
from service.jobs import JobService, clean_filename, is_artifact_name
from service.web import session_token
from storage import JOB_STATUSES, BlobNotFoundError, User

__all__ = ["API_PREFIX", "api"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_PUBLIC_ENDPOINTS = frozenset({"api.health", "api.openapi"})
_EVENT_POLL_S = 0.5
_EVENT_BATCH = 500
_DOWNLOAD_CHUNK = 1024 * 1024
_PRESIGN_S = 300
_MEDIA_TYPES = {
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}

api = Blueprint("api", __name__, url_prefix=API_PREFIX)


def _jobs() -> JobService:
    return service_context().jobs


def _user() -> User:
    return g.condense_user


@api.before_request
def _authenticate() -> None:
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header and request.method in ("GET", "HEAD"):
        # The web pages' session cookie (service.web), for reads only: their EventSource and download links cannot
        # send a header. Writes need the header, so a cookie never changes anything here (no CSRF through the API).
        token = session_token() or ""
        scheme = "bearer" if token else ""
    if scheme.lower() != "bearer" or not token:
        raise ServiceError(
            401, "an API token is needed: send 'Authorization: Bearer <token>' (made by 'condense token create USER')"
        )
    user = _jobs().metadata.authenticate(token)
    if user is None:
        raise ServiceError(401, "the API token is invalid or revoked")
    g.condense_user = user


# ---------------------------------------------------------------------------------------------------- meta


@api.get("/health")
def health() -> Any:
    """Whether this process reaches the metadata store, the blob store and the queue (no auth)."""
    checks: dict[str, str] = {}
    try:
        jobs = _jobs()
    except Exception as error:
        logger.warning("health: cannot open the stores: %s", error)
        return jsonify({"status": "unavailable", "checks": {"startup": type(error).__name__}}), 503
    probes = {
        "metadata": lambda: jobs.metadata.schema_version(),
        "blobs": lambda: list(itertools.islice(jobs.blobs.list("health/"), 1)),
        "queue": lambda: jobs.queue.pending(),
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as error:  # the type only: this answer is public, the details go to the log
            logger.warning("health: %s unreachable: %s", name, error)
            checks[name] = f"unreachable ({type(error).__name__})"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if healthy else "unavailable", "checks": checks}), 200 if healthy else 503


@api.get("/openapi.json")
def openapi() -> Any:
    """The OpenAPI 3.1 description of this API (no auth)."""
    from service.openapi import openapi_document

    return jsonify(openapi_document())


@api.get("/pools")
def pools() -> Any:
    """The unlabelled pools a job can mine (``options.pool``)."""
    from pu_mining.pool import PoolStore

    store = PoolStore(_jobs().blobs)
    return jsonify({"pools": [pool.as_dict() for pool in store.list()]})


# ------------------------------------------------------------------------------------------------- uploads


@api.post("/uploads")
def create_upload() -> Any:
    """Store one file for a later ``POST /jobs``: the raw body (``?filename=``) or a multipart ``file`` part."""
    jobs = _jobs()
    if request.mimetype == "multipart/form-data":
        part = request.files.get("file")
        if part is None:
            raise ServiceError.field(400, "file", "a multipart upload needs a 'file' part")
        info = jobs.store_upload(_user(), part.stream, part.filename, field="file")
    else:
        info = jobs.store_upload(_user(), request.stream, request.args.get("filename"), field="body")
    return jsonify({"upload": info.as_dict()}), 201


# ---------------------------------------------------------------------------------------------------- jobs


def _options_from_form(text: str | None) -> Any:
    if text is None or not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ServiceError.field(400, "options", f"not valid JSON ({error})") from None


@api.post("/jobs")
def create_job() -> Any:
    """Submit a job: multipart files, or JSON naming earlier uploads (see the module docstring)."""
    jobs, user = _jobs(), _user()
    if request.mimetype == "multipart/form-data":
        options = _options_from_form(request.form.get("options"))
        jobs.parse_options(options)  # cheap checks first: no file is copied for a request that will be refused
        jobs.check_limit(user)
        missing = [name for name in ("teacher", "positives") if name not in request.files]
        if missing:
            raise ServiceError(
                400,
                f"missing file part(s): {', '.join(missing)}",
                [{"field": name, "reason": "a multipart job needs this file part"} for name in missing],
            )
        teacher_part, positives_part = request.files["teacher"], request.files["positives"]
        with jobs.scratch() as scratch:
            teacher = jobs.save_stream(
                teacher_part.stream,
                scratch / "teacher",
                limit=jobs.settings.max_teacher_bytes,
                field="teacher",
                filename=clean_filename(teacher_part.filename, "teacher"),
            )
            positives = jobs.save_stream(
                positives_part.stream,
                scratch / "positives",
                limit=jobs.settings.max_upload_bytes,
                field="positives",
                filename=clean_filename(positives_part.filename, "positives"),
            )
            job = jobs.submit(user, options, teacher, positives)
    elif request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ServiceError(400, "the body must be a JSON object")
        unknown = sorted(set(body) - {"teacher_upload", "positives_upload", "options"})
        if unknown:
            raise ServiceError(
                400,
                f"unknown field(s): {', '.join(unknown)}",
                [{"field": name, "reason": "unknown field"} for name in unknown],
            )
        jobs.parse_options(body.get("options"))
        jobs.check_limit(user)
        teacher_info = jobs.get_upload(user, body.get("teacher_upload"), field="teacher_upload")
        positives_info = jobs.get_upload(user, body.get("positives_upload"), field="positives_upload")
        job = jobs.submit(user, body.get("options"), teacher_info, positives_info)
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
    limit_text = request.args.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise ServiceError.field(400, "limit", "must be a whole number from 1 to 1000")
    jobs = _jobs()
    return jsonify({"jobs": [jobs.view(job) for job in jobs.list(_user(), status, int(limit_text))]})


@api.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    """One job: status, stage, progress, ETA, metrics, error, inputs, options, artefacts."""
    jobs = _jobs()
    return jsonify(jobs.view(jobs.get(_user(), job_id)))


@api.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    """Cancel: a queued job at once (200), a running one within seconds (202). 409 if it has finished."""
    jobs = _jobs()
    job = jobs.cancel(_user(), job_id)
    return jsonify(jobs.view(job)), 200 if job.is_final else 202


@api.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    """Delete the job with its files. 409 while it is running (cancel it first)."""
    _jobs().delete(_user(), job_id)
    return Response(status=204)


@api.get("/jobs/<job_id>/artifacts/<name>")
def get_artifact(job_id: str, name: str) -> Any:
    """Download an artefact: streamed, or a redirect to a short-lived presigned URL when blobs are on S3."""
    jobs = _jobs()
    if not is_artifact_name(name):
        raise ServiceError(404, f"job {job_id} has no artefact {name!r}")
    artifact = jobs.artifact(_user(), job_id, name)
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


# -------------------------------------------------------------------------------------------------- events


def _sse(event_id: int | None, kind: str, data: Any) -> str:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {kind}")
    lines.extend(f"data: {line}" for line in json.dumps(data, separators=(",", ":")).splitlines())
    return "\n".join(lines) + "\n\n"


@api.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Any:
    """Server-sent events of one job (see the module docstring)."""
    jobs, user = _jobs(), _user()
    jobs.get(user, job_id)  # 404 for a missing or another user's job
    after_text = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    if not after_text.strip().isdigit():
        raise ServiceError.field(400, "Last-Event-ID", "must be a whole number (an event id)")
    after = int(after_text.strip())
    settings = jobs.settings

    def stream() -> Iterator[str]:
        last_id = after
        started = last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            job = jobs.metadata.get_job(job_id, owner=user.name)
            events = [] if job is None else jobs.metadata.events_since(job_id, last_id, _EVENT_BATCH)
            for event in events:
                yield _sse(event.id, event.kind, {**event.data, "created_at": event.created_at})
                last_id = event.id
                last_sent = time.monotonic()
            if job is None:
                yield _sse(None, "end", {"id": job_id, "status": "deleted"})
                return
            if job.is_final and len(events) < _EVENT_BATCH:
                yield _sse(None, "end", jobs.view(job))
                return
            now = time.monotonic()
            if now - started >= settings.sse_max_s:
                return  # the client reconnects with Last-Event-ID
            if now - last_sent >= settings.sse_keepalive_s:
                yield ": keep-alive\n\n"
                last_sent = now
            if len(events) < _EVENT_BATCH:
                time.sleep(min(_EVENT_POLL_S, settings.sse_keepalive_s))

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream(), mimetype="text/event-stream", headers=headers)
