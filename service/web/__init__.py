"""The web pages: sign in with an API token, list jobs, submit one through a form, watch it live, cancel it.

Server-rendered HTML (Jinja templates in ``service/web/templates``; one stylesheet and one small script in
``service/web/static``, served at ``/assets/``; nothing is loaded from anywhere else). The pages call the same
:class:`~service.jobs.service.JobService` methods as the JSON API (:mod:`service.api`), so validation, submission,
user isolation and cancelling follow one code path. The routes are in :mod:`service.web.views`, the new-job form in
:mod:`service.web.forms`, the results part of the job page in :mod:`service.web.results`, the template filters in
:mod:`service.web.filters`.

| route | what |
|---|---|
| ``GET /`` | the jobs list (the sign-in page when signed out) |
| ``GET, POST /sign-in`` | paste an API token (made by ``condense token create USER``) |
| ``POST /sign-out`` | forget it |
| ``GET /jobs`` | the user's own jobs: status, progress, student, accuracy, size, speed, links, clone |
| ``GET, POST /jobs/new`` | the new-job form; refused fields are shown next to their inputs and nothing is queued |
| ``GET /jobs/<id>`` | one job, updated live from ``GET /api/v1/jobs/<id>/events``; cancel, artefacts, report table |
| ``GET /jobs/<id>/results`` | the results part of that page alone (the script swaps it in when the job ends) |
| ``POST /jobs/<id>/cancel`` | cancel the job |
| ``POST /jobs/<id>/delete``, ``POST /jobs/<id>/rerun``, ``GET /jobs/<id>/report`` | see :mod:`service.web.manage` |
| ``GET /pools``, ``GET, POST /tokens``, ``POST /tokens/<id>/revoke`` | see :mod:`service.web.manage` |

**Signing in.** The service has API tokens only. The sign-in form checks the token
(:meth:`storage.MetadataStore.authenticate`) and starts a server-side session (:class:`storage.access.SessionStore`,
``CONDENSE_SESSION_TTL_S``); Flask's session cookie (signed with ``CONDENSE_SECRET_KEY``,
:meth:`~service.settings.Settings.session_secret`, ``HttpOnly``, ``SameSite=Strict``, ending with the browser session)
carries only the session's random id, never the token. Signing out ends the session server-side, so a copy of the old
cookie stops working; every request checks the session and its token again, so revoking the token signs the user out
at once. The JSON
API accepts this cookie for its GET requests only (the page's ``EventSource`` and its download links cannot send an
``Authorization`` header); writes through the API still need the header, so the cookie alone never changes anything
there.

**CSRF.** Each session holds a random token (:func:`csrf_token`); every form carries it in the hidden field
``csrf_token``, and a POST to these pages without the matching value is refused with 400 before it does anything.
``SameSite=Strict`` is a second line.

**Live updates.** The job page opens an ``EventSource`` on the API's event stream, starting after the last event the
page already reflects, and updates status, stage, progress bar, time left and messages in place. When the stream
ends (the job is final) it fetches ``/jobs/<id>/results`` and swaps in the artefact links and the report table.
Without JavaScript everything works except the live part: reloading shows the current state.

A missing job and another user's job are the same 404 page; a signed-out visitor is sent to the sign-in page and,
after signing in, back to the page asked for (a local path only).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, flash, g, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.context import EXTENSION, SESSION_ID_KEY, current_user, service_context, session_id
from service.errors import ServiceError
from service.jobs.service import JobService
from storage import User

__all__ = ["CSRF_FIELD", "csrf_token", "web", "web_jobs", "web_user"]

logger = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
"""The hidden form field carrying the session's CSRF token."""
_CSRF_KEY = "condense_csrf"
_SESSION_COOKIE = "condense_session"
_NO_AUTH_ENDPOINTS = frozenset({"web.sign_in", "web.static"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

web = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


@web.record_once
def _configure(state: BlueprintSetupState) -> None:
    """Session cookie settings of the app the pages are registered on (after :class:`ServiceContext` is set up)."""
    app = state.app
    if EXTENSION not in app.extensions:
        raise RuntimeError("register the web blueprint on an app made by service.app.create_app")
    settings = service_context(app).settings
    app.secret_key = settings.session_secret()
    app.config.update(
        SESSION_COOKIE_NAME=_SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )


def web_jobs() -> JobService:
    """The process's :class:`JobService`."""
    return service_context().jobs


def web_user() -> User:
    """The signed-in user (the guard has checked there is one)."""
    user = current_user()
    if user is None:
        raise ServiceError(401, "sign in first")
    return user


# -------------------------------------------------------------------------------------------- session, CSRF


def csrf_token() -> str:
    """The browser session's CSRF token, made on first use (the templates put it in every form)."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return token


def _check_csrf() -> None:
    expected = session.get(_CSRF_KEY)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not given or not hmac.compare_digest(expected, given):
        raise ServiceError(
            400, "The form had expired or did not come from this site. Reload the page and send it again."
        )


def _safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (no scheme, no host, not ``//``), else None: no open redirects."""
    if not target or len(target) > 2000 or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    return target


@web.before_request
def _guard() -> Any:
    """CSRF check on every POST, then the session's token on every page but sign-in and the static files."""
    if request.endpoint == "web.static":
        return None
    if request.method not in _SAFE_METHODS:
        _check_csrf()
    if request.endpoint in _NO_AUTH_ENDPOINTS:
        return None
    if current_user() is None:
        if session_id() is not None:
            session.pop(SESSION_ID_KEY, None)
            flash(
                "Your session is no longer valid (signed out, expired, or its token revoked). Sign in again.", "error"
            )
        wanted = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("web.sign_in", next=wanted), 303)
    return None


@web.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "web.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@web.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "csrf_field": CSRF_FIELD,
        "current_user": g.get("condense_user"),
    }


# -------------------------------------------------------------------------------------------------- errors


def _error_page(status: int, message: str) -> Any:
    return render_template("error.html", status=status, message=message), status


@web.errorhandler(ServiceError)
def _service_error(error: ServiceError) -> Any:
    return _error_page(error.status, error.message)


@web.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> Any:
    limit = service_context().settings.max_request_bytes
    return _error_page(413, f"The upload is over the {limit:,}-byte limit.")


@web.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    return _error_page(error.code or 500, error.description or error.name)


@web.errorhandler(Exception)
def _unexpected(error: Exception) -> Any:
    logger.exception("web: unhandled error on %s %s", request.method, request.path)
    return _error_page(500, f"Internal server error ({type(error).__name__}).")


# The pages and the template filters, registered on ``web`` when imported.
from service.web import filters, manage, views  # noqa: E402, F401
