"""``GET /jobs/{id}/events``: a job's events as server-sent events (see :mod:`service.api`)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request

from service.api import api, api_jobs, api_user
from service.api.params import whole_number
from service.api.stream_gate import StreamGate

_EVENT_POLL_S = 0.5
_EVENT_BATCH = 500
_MAX_EVENT_ID = 10**18 - 1


_GATE_KEY = "condense_stream_gate"
_GATE_LOCK = threading.Lock()


def _stream_gate(settings: Any) -> StreamGate:
    """This process's count of open event streams (one per app)."""
    with _GATE_LOCK:
        gate = current_app.extensions.get(_GATE_KEY)
        if gate is None:
            gate = current_app.extensions[_GATE_KEY] = StreamGate(settings.sse_streams, settings.sse_streams_per_user)
    return gate


def _sse(event_id: int | None, kind: str, data: Any) -> str:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {kind}")
    lines.extend(f"data: {line}" for line in json.dumps(data, separators=(",", ":")).splitlines())
    return "\n".join(lines) + "\n\n"


@api.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Any:
    """Server-sent events of one job (see :mod:`service.api`)."""
    jobs, user = api_jobs(), api_user()
    jobs.get(user, job_id)  # 404 for a missing or another user's job
    header = request.headers.get("Last-Event-ID")
    if header:
        after = whole_number(header, "Last-Event-ID", default=0, maximum=_MAX_EVENT_ID)
    else:
        after = whole_number(request.args.get("after"), "after", default=0, maximum=_MAX_EVENT_ID)
    settings = jobs.settings
    gate = _stream_gate(settings)
    gate.admit(user.name)  # 429 / 503 with Retry-After past the stream limits

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
                # A random share of the interval, so streams opened together do not query the database together.
                time.sleep(min(_EVENT_POLL_S, settings.sse_keepalive_s) * random.uniform(0.5, 1.5))

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(stream(), mimetype="text/event-stream", headers=headers)
    released = threading.Event()

    def release() -> None:  # once, when the server closes the response (finished, timed out or disconnected)
        if not released.is_set():
            released.set()
            gate.release(user.name)

    response.call_on_close(release)
    return response
