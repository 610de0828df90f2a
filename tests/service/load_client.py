"""An asyncio load client for the load suite: pollers, event streams and a health probe in one thread.

One event loop instead of a thread per connection: with 250 client threads on a 2-core machine, a thread whose
response has arrived can wait many of the interpreter's 5 ms switch intervals for the GIL, and that wait was counted
as server latency. Here a response is timed when the loop reads it, which costs one coroutine step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field


@dataclass
class LoadFigures:
    job_latencies: list[float] = field(default_factory=list)
    health_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]
    return await reader.readexactly(int(headers.get("content-length", "0")))


def _request(path: str, token: str | None, *, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _stream(port: int, token: str, job_id: str, opened: asyncio.Queue, stop: asyncio.Event, out: LoadFigures):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(f"/api/v1/jobs/{job_id}/events", token))
        status, _ = await _read_response(reader)
        if status != 200:
            out.errors.append(f"stream: {status}")
            await opened.put(False)
            return
        await reader.readline()
        await opened.put(True)
        while not stop.is_set():
            read = asyncio.ensure_future(reader.readline())
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                if not read.result() and not stop.is_set():
                    out.errors.append("stream: closed early")
                    return
            else:
                read.cancel()
            stopped.cancel()
    except OSError as error:
        if not stop.is_set():
            out.errors.append(f"stream: {error!r}")
    finally:
        writer.close()


async def _poller(
    port: int, token: str, job_id: str, delay_s: float, interval_s: float, stop: asyncio.Event, out: LoadFigures
) -> None:
    await asyncio.sleep(delay_s)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _request(f"/api/v1/jobs/{job_id}", token)
    while not stop.is_set():
        started = time.monotonic()
        try:
            writer.write(request)
            status, headers = await _read_response(reader)
            body = await _read_body(reader, headers)
            if status != 200 or json.loads(body)["id"] != job_id:
                out.errors.append(f"poll: {status}")
        except (OSError, ValueError, asyncio.IncompleteReadError) as error:
            out.errors.append(f"poll: {error!r}")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out.job_latencies.append(time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - started)))
    writer.close()


async def _health(port: int, stop: asyncio.Event, out: LoadFigures) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("/api/v1/health", None, close=True))
            status, headers = await _read_response(reader)
            await _read_body(reader, headers)
            writer.close()
            if status != 200:
                out.errors.append(f"health: {status}")
        except (OSError, asyncio.IncompleteReadError) as error:
            out.errors.append(f"health: {error!r}")
        out.health_latencies.append(time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _run(
    port: int, stream_users: list[tuple[str, str]], poll_users: list[tuple[str, str]], seconds: float, interval_s: float
) -> LoadFigures:
    out = LoadFigures()
    stop = asyncio.Event()
    opened: asyncio.Queue = asyncio.Queue()
    streams = [asyncio.ensure_future(_stream(port, token, job, opened, stop, out)) for token, job in stream_users]
    for _ in stream_users:
        if not await asyncio.wait_for(opened.get(), 60):
            stop.set()
            await asyncio.gather(*streams, return_exceptions=True)
            raise RuntimeError(f"not every stream opened: {out.errors[:5]}")
    count = len(poll_users)
    tasks = [
        asyncio.ensure_future(_poller(port, token, job, interval_s * i / count, interval_s, stop, out))
        for i, (token, job) in enumerate(poll_users)
    ]
    tasks.append(asyncio.ensure_future(_health(port, stop, out)))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, *streams, return_exceptions=True), 60)
    return out


def run_load(
    port: int, stream_users: list[tuple[str, str]], poll_users: list[tuple[str, str]], seconds: float, interval_s: float
) -> LoadFigures:
    """One event stream per ``stream_users`` entry (``(token, job id)``), held open; then one poller per
    ``poll_users`` entry (``GET /api/v1/jobs/{id}`` every ``interval_s`` on a kept-alive connection, starts spread over
    one interval) and ``/health`` on a fresh connection every 0.1 s, for ``seconds``."""
    return asyncio.run(_run(port, stream_users, poll_users, seconds, interval_s))
