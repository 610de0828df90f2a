"""The service context of one process, and who is making the current request.

:class:`ServiceContext` holds the settings and opens the stores and the queue lazily, on first use in each process
(after gunicorn forks its workers, so no database connection is shared across processes). :func:`create_app` hangs
one off the Flask app; :func:`service_context` finds it.

:func:`current_user` is the one authentication path of the API and the pages. A request is authenticated by the
``Authorization: Bearer <token>`` header or, without that header, by the pages' signed session cookie, which carries
a random session id (:data:`SESSION_ID_KEY`), never the API token: the session lives server-side
(:class:`storage.access.SessionStore`), expires after ``CONDENSE_SESSION_TTL_S`` and ends at sign-out, so a copy of
an old cookie stops working. The cookie counts for the pages (whose forms carry a CSRF token) and for the API's
GET/HEAD requests (the job page's ``EventSource`` and download links cannot send a header); an API write needs the
header, so a cookie alone never changes anything through the API. Tokens and sessions are checked against the
metadata store on every request, so revoking the token a browser signed in with signs it out at once.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from flask import current_app, g, request, session
from flask.sansio.app import App

from service.settings import Settings

if TYPE_CHECKING:
    from service.jobs.service import JobService
    from storage import User

__all__ = [
    "SESSION_ID_KEY",
    "ServiceContext",
    "current_user",
    "request_token",
    "service_context",
    "session_id",
]

EXTENSION = "condense"
SESSION_ID_KEY = "condense_session_id"
"""The cookie-session key holding the signed-in browser's server-side session id."""
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_USER_KEY = "condense_user"


class ServiceContext:
    """The service's resources for one process: settings, metadata and blob stores, queue, job service (lazy)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._jobs: JobService | None = None

    @property
    def jobs(self) -> JobService:
        if self._jobs is None:
            with self._lock:
                if self._jobs is None:
                    from service.jobs.queue import open_queue
                    from service.jobs.service import JobService
                    from storage import open_metadata_store

                    metadata = open_metadata_store(self.settings.database_url)
                    blobs = self.settings.open_blobs()
                    queue = open_queue(self.settings.broker_url)
                    self._jobs = JobService(self.settings, metadata, blobs, queue)
        return self._jobs

    def close(self) -> None:
        """Close the stores (tests; a process exiting needs no call)."""
        if self._jobs is not None:
            self._jobs.queue.close()
            self._jobs.metadata.close()
            self._jobs.blobs.close()
            self._jobs = None


def service_context(app: App | None = None) -> ServiceContext:
    """The :class:`ServiceContext` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    return target.extensions[EXTENSION]


def session_id() -> str | None:
    """The server-side session id of the signed-in browser, or None."""
    value = session.get(SESSION_ID_KEY)
    return value if isinstance(value, str) and value else None


def request_token() -> str | None:
    """The current request's credential: the bearer token, else the session id where the cookie counts (above)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None
    if request.blueprint == "api" and request.method not in _SAFE_METHODS:
        return None
    return session_id()


def current_user() -> User | None:
    """The user the current request's token or session belongs to (checked once per request), or None."""
    if _USER_KEY not in g:
        credential = request_token()
        metadata = service_context().jobs.metadata
        if not credential:
            g.condense_user = None
        elif request.headers.get("Authorization"):
            g.condense_user = metadata.authenticate(credential)
        else:
            g.condense_user = metadata.session_user(credential)
    return g.condense_user
