"""Errors the service reports to its users, independent of HTTP frameworks.

:class:`ServiceError` carries an HTTP-style status, a one-line message and, where the problem is in particular
fields (an upload, an option), a list of ``{"field": ..., "reason": ...}``. The API turns it into the JSON body
``{"error": {"status": ..., "message": ..., "fields": [...]}}``; the CLI prints the message. The statuses:

| status | when |
|---|---|
| 400 | malformed request: not JSON, missing part, unknown upload id |
| 401 | no token, or a bad / revoked one |
| 403 | the action needs the admin role |
| 404 | no such job / artefact -- also another user's (existence is not revealed) |
| 409 | the job's state forbids it (cancel a finished job, delete a running one) |
| 413 | an upload over its size limit |
| 415 | a file of the wrong type: a pickled model, not a model, not an image archive |
| 422 | understood but unusable: invalid options, unsafe or undecodable archive, classes without images |
| 429 | too many queued + running jobs for this user |
| 503 | a backend (database, blob store, queue) is unreachable |
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ErrorDetail", "FieldError", "ServiceError"]


class FieldError(BaseModel):
    """One refused field and why."""

    field: str = Field(description="teacher, positives, options.<name>, teacher_upload, positives_upload, file, ...")
    reason: str


class ErrorDetail(BaseModel):
    """The error: its HTTP status (repeated), a one-line message and the refused fields."""

    status: int = Field(description="The HTTP status, repeated")
    message: str
    fields: list[FieldError]


class ErrorBody(BaseModel):
    """Every error answer of the API: ``{"error": {"status", "message", "fields"}}``."""

    model_config = {"title": "Error"}

    error: ErrorDetail


class ServiceError(Exception):
    """A request the service refuses: ``status`` (HTTP code), ``message`` and per-field ``fields``."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error code, got {status!r}")
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = [dict(item) for item in fields or ()]
        self.retry_after_s: int | None = None
        """Seconds to send as ``Retry-After`` (429 and 503 answers that a client may try again)."""

    @classmethod
    def field(cls, status: int, field: str, reason: str) -> ServiceError:
        """An error about one field, whose reason is also the message."""
        return cls(status, f"{field}: {reason}", [{"field": field, "reason": reason}])

    def as_dict(self) -> dict[str, Any]:
        """The JSON error body (:class:`ErrorBody`)."""
        return error_body(self.status, self.message, self.fields)


def error_body(status: int, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The API's JSON error body, checked against :class:`ErrorBody` (which the OpenAPI document publishes)."""
    body = ErrorBody(error=ErrorDetail(status=status, message=message, fields=[FieldError(**f) for f in fields or ()]))
    return body.model_dump()
