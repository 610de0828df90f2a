"""A small HTTP client of the Condense API, for ``condense submit|status|download|cancel`` and CI scripts.

Standard library only (:mod:`http.client`): uploads stream from disk as ``multipart/form-data`` with a known
``Content-Length`` (memory stays bounded whatever the file size), downloads stream to disk and are checked against
the SHA-256 the server recorded, and a redirect to a presigned S3 URL is followed without sending the API token
there. :meth:`Client.wait` follows the job's server-sent events (reconnecting with ``Last-Event-ID`` when the server
closes a stream) and falls back to polling if the stream cannot be read.

Errors: :class:`ApiError` (a RuntimeError) with the server's status, message and field list; connection problems
raise :class:`ApiError` with status 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import ssl
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from storage.files import atomic_write

__all__ = ["FINAL_STATUSES", "ApiError", "Client", "GateResult", "SseEvent", "quality_gate", "zip_folder"]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_CHUNK = 1024 * 1024
_API = "/api/v1"


class ApiError(RuntimeError):
    """The server refused a request (``status`` >= 400), or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        self.status = status
        self.message = message
        self.fields = list(fields or ())
        detail = "; ".join(f"{item.get('field')}: {item.get('reason')}" for item in self.fields)
        text = message if not detail or detail in message else f"{message} ({detail})"
        super().__init__(f"HTTP {status}: {text}" if status else text)


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its id (None for the closing ``end`` event), kind and JSON data."""

    id: int | None
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class GateResult:
    """The quality gate's verdict on a finished job: ``outcome`` (passed, failed, undecided; None: no gate asked
    for) and why."""

    outcome: str | None
    reason: str

    @property
    def passed(self) -> bool | None:
        return None if self.outcome is None else self.outcome == "passed"

    @property
    def verdict(self) -> str:
        from service.pipeline.figures import GATE_VERDICTS

        return GATE_VERDICTS.get(self.outcome or "", "no gate")


def quality_gate(job: dict[str, Any]) -> GateResult:
    """The quality gate's verdict on a finished job, as the pipeline computed it (``metrics["gate"]``).

    The gate is computed once, by the pipeline, from the job's ``max_accuracy_drop`` option (percentage points);
    a job without that option has no gate (``outcome`` None).
    """
    gate = (job.get("metrics") or {}).get("gate")
    if isinstance(gate, dict) and gate.get("outcome") in ("passed", "failed", "undecided"):
        return GateResult(gate["outcome"], str(gate.get("reason") or gate["outcome"]))
    return GateResult(None, "no quality gate")


def zip_folder(folder: Path, dest: Path) -> Path:
    """Zip ``folder`` (class subfolders of images) into ``dest``, skipping hidden files; return ``dest``."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or path.is_symlink() or not path.is_file():
                continue
            archive.write(path, relative.as_posix())
    return dest


class _MultipartBody:
    """A ``multipart/form-data`` body streamed from files, with its length known in advance."""

    def __init__(self, fields: dict[str, str], files: dict[str, Path]) -> None:
        self.boundary = f"condense-{uuid.uuid4().hex}"
        self._parts: list[bytes | Path] = []
        for name, value in fields.items():
            self._parts.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        for name, path in files.items():
            filename = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
            head = (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            self._parts += [head.encode(), path, b"\r\n"]
        self._parts.append(f"--{self.boundary}--\r\n".encode())

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return sum(part.stat().st_size if isinstance(part, Path) else len(part) for part in self._parts)

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, Path):
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        yield chunk
            else:
                yield part


def _counted(chunks: Iterator[bytes], total: int, on_upload: Callable[[int, int], None]) -> Iterator[bytes]:
    """``chunks`` unchanged, reporting the bytes handed on so far to ``on_upload`` (throttled)."""
    sent, last = 0, 0.0
    on_upload(0, total)
    for chunk in chunks:
        yield chunk
        sent += len(chunk)
        now = time.monotonic()
        if now - last >= 0.1 and sent < total:
            last = now
            on_upload(sent, total)
    on_upload(total, total)


class Client:
    """The API at ``server`` (``http(s)://host:port``) as the user of ``token``."""

    def __init__(self, server: str, token: str, *, timeout: float = 300.0) -> None:
        if not server:
            raise ValueError("no server: pass --server URL or set CONDENSE_SERVER")
        if not token:
            raise ValueError("no API token: pass --token or set CONDENSE_TOKEN (made by 'condense token create')")
        parts = urlsplit(server if "://" in server else f"http://{server}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server must be an http(s)://host:port URL, got {server!r}")
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        self.base_path = parts.path.rstrip("/").removesuffix(_API)
        self.token = token
        self.timeout = timeout

    # plumbing -----------------------------------------------------------------------------------------------------

    def _connection(self, scheme: str, netloc: str, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = self.timeout if timeout is None else timeout
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(netloc, timeout=timeout)

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = self._connection(self.scheme, self.netloc, timeout)
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", **(headers or {})}
        try:
            connection.request(method, f"{self.base_path}{_API}{path}", body=body, headers=all_headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise ApiError(0, f"cannot reach {self.scheme}://{self.netloc}: {error}") from None
        return connection, response

    @staticmethod
    def _raise_for(response: http.client.HTTPResponse) -> None:
        if response.status < 400:
            return
        raw = response.read()
        try:
            error = json.loads(raw)["error"]
            raise ApiError(response.status, str(error.get("message")), error.get("fields") or [])
        except (ValueError, KeyError, TypeError):
            text = raw.decode("utf-8", "replace").strip().splitlines()
            raise ApiError(response.status, text[0] if text else response.reason) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        connection, response = self._open(method, path, **kwargs)
        try:
            self._raise_for(response)
            raw = response.read()
            return json.loads(raw) if raw else None
        finally:
            connection.close()

    # the API ------------------------------------------------------------------------------------------------------

    def submit(
        self,
        teacher: str | os.PathLike[str],
        positives: str | os.PathLike[str] | None,
        options: dict,
        test: str | os.PathLike[str] | None = None,
        *,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> dict:
        """Upload the files (a positives or test folder is zipped first) and submit the job; return the job.

        ``positives`` None: a job in the no-labels mode (the teacher only). ``test`` is an optional labelled test set.
        ``on_upload(sent, total)`` sees the bytes sent (at most ten calls a second, and once at the end, after which
        the server checks the files before it answers)."""
        teacher_path = Path(teacher)
        positives_path = None if positives is None else Path(positives)
        if not teacher_path.is_file():
            raise FileNotFoundError(f"no teacher file {teacher_path}")
        if positives_path is not None and not positives_path.exists():
            raise FileNotFoundError(f"no positives file or folder {positives_path}")
        test_path = None if test is None else Path(test)
        if test_path is not None and not test_path.exists():
            raise FileNotFoundError(f"no test set file or folder {test_path}")
        with contextlib.ExitStack() as stack:
            files = {"teacher": teacher_path}
            if positives_path is not None:
                files["positives"] = positives_path
            if test_path is not None:
                files["test"] = test_path
            for name in ("positives", "test"):
                if name in files and files[name].is_dir():
                    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="condense-")))
                    files[name] = zip_folder(files[name], folder / f"{files[name].resolve().name}.zip")
            body = _MultipartBody({"options": json.dumps(options)}, files)
            total = len(body)
            headers = {"Content-Type": body.content_type, "Content-Length": str(total)}
            chunks = iter(body) if on_upload is None else _counted(iter(body), total, on_upload)
            return self._json("POST", "/jobs", body=chunks, headers=headers)

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{quote(job_id, safe='')}")

    def jobs(self, status: str | None = None, limit: int = 100) -> list[dict]:
        query = urlencode({k: v for k, v in {"status": status, "limit": limit}.items() if v is not None})
        return self._json("GET", f"/jobs?{query}")["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{quote(job_id, safe='')}/cancel")

    def delete(self, job_id: str) -> None:
        self._json("DELETE", f"/jobs/{quote(job_id, safe='')}")

    def tokens(self) -> list[dict]:
        """This token's user's API tokens (no secrets)."""
        return self._json("GET", "/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> None:
        self._json("DELETE", f"/tokens/{int(token_id)}")

    def uploads(self) -> dict:
        """This user's uploads and quota: ``{"uploads": [...], "used_bytes", "quota_bytes"}``."""
        return self._json("GET", "/uploads")

    def delete_upload(self, upload_id: str) -> None:
        self._json("DELETE", f"/uploads/{quote(upload_id, safe='')}")

    def events(self, job_id: str, after: int = 0, timeout: float = 120.0) -> Iterator[SseEvent]:
        """The job's server-sent events after event ``after``, until the server closes the stream."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        connection, response = self._open(
            "GET", f"/jobs/{quote(job_id, safe='')}/events", headers=headers, timeout=timeout
        )
        try:
            self._raise_for(response)
            event_id: int | None = None
            kind = "message"
            data: list[str] = []
            while True:
                raw = response.readline()
                if not raw:
                    return
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        try:
                            payload = json.loads("\n".join(data))
                        except ValueError:
                            payload = {"text": "\n".join(data)}
                        yield SseEvent(event_id, kind, payload if isinstance(payload, dict) else {"value": payload})
                    event_id, kind, data = None, "message", []
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id" and value.isdigit():
                    event_id = int(value)
                elif name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
        finally:
            connection.close()

    def wait(
        self,
        job_id: str,
        on_event: Callable[[SseEvent], None] | None = None,
        *,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
    ) -> dict:
        """Follow the job until it is final; return the final job. ``on_event`` sees every event on the way."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last_id = 0
        use_events = True
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(0, f"job {job_id} did not finish within {timeout_s:g} s")
            if use_events:
                try:
                    for event in self.events(job_id, after=last_id):
                        if event.id is not None:
                            last_id = event.id
                        if on_event is not None:
                            on_event(event)
                        if event.kind == "end":
                            return self.job(job_id)
                        if deadline is not None and time.monotonic() > deadline:
                            break
                    continue  # the server closed the stream: reconnect
                except ApiError as error:
                    if error.status and error.status != 503:
                        raise
                    use_events = False  # a proxy that breaks streams: poll instead
                except (OSError, http.client.HTTPException):
                    use_events = False
            job = self.job(job_id)
            if job["status"] in FINAL_STATUSES:
                return job
            if on_event is not None:
                keys = ("stage", "progress", "eta_s", "status")
                on_event(SseEvent(None, "progress", {key: job.get(key) for key in keys}))
            time.sleep(poll_s)

    def download(self, job_id: str, name: str, dest: str | os.PathLike[str], sha256: str | None = None) -> Path:
        """Save one artefact to ``dest`` (atomically), checking its SHA-256; return ``dest``."""
        dest = Path(dest)
        path = f"/jobs/{quote(job_id, safe='')}/artifacts/{quote(name, safe='')}"
        connection, response = self._open("GET", path, headers={"Accept": "*/*"})
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.read()
                connection.close()
                target = urlsplit(location)
                if target.scheme not in ("http", "https") or not target.netloc:
                    raise ApiError(response.status, f"bad redirect for artefact {name}: {location!r}")
                connection = self._connection(target.scheme, target.netloc)
                # The presigned URL carries its own credentials; the API token is not sent there.
                connection.request("GET", target.path + (f"?{target.query}" if target.query else ""))
                response = connection.getresponse()
                if response.status >= 400:
                    raise ApiError(response.status, f"downloading artefact {name} from storage failed")
            self._raise_for(response)
            expected = sha256 or response.getheader("X-Condense-SHA256")
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with atomic_write(dest) as handle:  # nothing is saved unless the whole file arrived and matches
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
                if expected and digest.hexdigest() != expected:
                    raise ApiError(0, f"artefact {name}: SHA-256 mismatch (corrupt download); not saved")
        except (OSError, http.client.HTTPException) as error:
            raise ApiError(0, f"downloading artefact {name} failed: {error}") from None
        finally:
            connection.close()
        return dest

    def download_all(self, job: dict, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Save every artefact of ``job`` (a job dict) into ``out_dir``."""
        return [
            self.download(job["id"], item["name"], Path(out_dir) / item["name"], item.get("sha256"))
            for item in job.get("artifacts", [])
        ]
