"""The JSON API, ``/api/v1``: jobs, uploads, events, artefacts, pools, health. Described in ``/api/v1/openapi.json``.

Thin views over :class:`~service.jobs.service.JobService`, one module per resource (:mod:`service.api.meta`,
:mod:`~service.api.uploads`, :mod:`~service.api.jobs`, :mod:`~service.api.artifacts`, :mod:`~service.api.events`):
each parses the request, calls one service method and shapes the answer. Every request except ``GET /live``,
``GET /health`` and ``GET /openapi.json`` needs ``Authorization: Bearer <token>`` (tokens from
``condense token create``); GET requests without that header may carry the web pages' signed session cookie instead
(:func:`service.context.current_user`: the job page's event stream and download links). A user sees only their own
jobs and uploads, and another user's job is a 404, exactly like a missing one. Errors are ``{"error": {"status",
"message", "fields"}}`` (see :mod:`service.errors` for the statuses).

Submitting a job, two ways:

- ``POST /jobs`` as ``multipart/form-data`` with the files ``teacher`` and ``positives`` and the form field
  ``options`` (a JSON object, optional). Simple, one request.
- ``POST /uploads`` once per file (the raw bytes as the body, ``?filename=`` to name it, or multipart with a ``file``
  part), each answering an upload id; then ``POST /jobs`` with a JSON body ``{"teacher_upload": id,
  "positives_upload": id, "options": {...}}``. For large files and clients that cannot stream multipart. An upload
  is used by one job and deleted with it; one no job takes is deleted after ``CONDENSE_UPLOAD_TTL_S``.

Either way every check (:mod:`service.jobs.checks`) runs before the job exists: nothing is queued that is sure to fail.

Events (``GET /jobs/{id}/events``) are server-sent events: each metadata event of the job as ``id:`` (its id),
``event:`` (its kind: ``status``, ``progress``, ``cancel_requested``) and ``data:`` (JSON). A client resumes with
``Last-Event-ID`` (browsers' ``EventSource`` does so itself) or ``?after=ID``. When the job is final the stream sends
``event: end`` with the job and closes; otherwise it closes after ``CONDENSE_SSE_MAX_S`` so a web thread is not held
forever (``EventSource`` reconnects), sending a ``: keep-alive`` comment every ``CONDENSE_SSE_KEEPALIVE_S``.
"""

from __future__ import annotations

from flask import Blueprint, request

from service.context import current_user, request_token, service_context
from service.errors import ServiceError
from service.jobs.service import JobService
from storage import User

__all__ = ["API_PREFIX", "api", "api_jobs", "api_user"]

API_PREFIX = "/api/v1"
_PUBLIC_ENDPOINTS = frozenset({"api.live", "api.health", "api.openapi"})

api = Blueprint("api", __name__, url_prefix=API_PREFIX)


def api_jobs() -> JobService:
    """The process's :class:`JobService`."""
    return service_context().jobs


def api_user() -> User:
    """The authenticated user of this request (set by :func:`_authenticate`)."""
    user = current_user()
    if user is None:
        raise ServiceError(401, "the API token is invalid or revoked")
    return user


@api.before_request
def _authenticate() -> None:
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return
    if request_token() is None:
        raise ServiceError(
            401, "an API token is needed: send 'Authorization: Bearer <token>' (made by 'condense token create USER')"
        )
    api_user()


# The resources' routes, registered on ``api`` when imported.
from service.api import artifacts, events, jobs, meta, tokens, uploads  # noqa: E402, F401
