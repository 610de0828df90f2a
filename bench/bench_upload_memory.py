"""Resident memory of a web worker per upload: real gunicorn on loopback, one worker, large and hostile uploads.

Usage (repository root)::

    python -m bench.bench_upload_memory [--out docs/results/upload_memory.json]

Starts ``gunicorn -c python:service.gunicorn_conf`` with one web worker (SQLite and local blobs in a temporary
folder), waits until the worker has finished its start-up imports, then for each case resets the worker's peak
resident set (``/proc/PID/clear_refs``), sends the requests and reads ``VmHWM``: the figure is the peak resident set
during the case minus the resident set just before it. Needs Linux and the right to write the worker's
``clear_refs`` (the same user, or root). The goal (docs/hardening.md): under 100 MB above idle for any upload.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024**2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmHWM", "VmRSS"))}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, data: Path) -> None:
        self.port = _free_port()
        env = {
            **os.environ,
            "CONDENSE_DATA_DIR": str(data),
            "CONDENSE_BIND": f"127.0.0.1:{self.port}",
            "CONDENSE_WEB_WORKERS": "1",
            "CONDENSE_DEMO_POOL": "0",
            "CONDENSE_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        self.data = data
        command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/api/v1/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("gunicorn did not become healthy")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        self.worker = int(children[0])
        while True:  # until the start-up imports are done
            used = _cpu_s(self.worker)
            time.sleep(1.0)
            if _cpu_s(self.worker) - used < 0.05:
                break

    def request(
        self, method: str, path: str, body: bytes | Callable[[], io.BufferedIOBase] | None = None, **headers: str
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            payload = body() if callable(body) else body
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _positives_zip(path: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"class{index % 5}/{index:06d}.png", _png(rng.integers(0, 256, (28, 28), dtype=np.uint8)))


def _reversed_tar_gz(path: Path, count: int) -> None:
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as archive:
        for index in reversed(range(count)):
            data = _png(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
            info = tarfile.TarInfo(f"class{index % 2}/{index:05d}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _teachers(folder: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32_000), nn.ReLU(), nn.Linear(32_000, 5)).eval()
    small = nn.Sequential(nn.Flatten(), nn.Linear(784, 5)).eval()
    files = {"large.pt": model, "small.pt": small}
    for name, module in files.items():
        torch.jit.script(module).save(str(folder / name))
    torch.onnx.export(model, torch.rand(1, 1, 28, 28), str(folder / "large.onnx"), dynamo=False)
    return {"torchscript": folder / "large.pt", "onnx": folder / "large.onnx", "small": folder / "small.pt"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "upload_memory.json")
    args = parser.parse_args(argv)
    from storage import open_metadata_store

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        print("making the inputs ...", flush=True)
        teachers = _teachers(folder)
        _positives_zip(folder / "many.zip", 100_000)
        _reversed_tar_gz(folder / "reversed.tar.gz", 260)
        rng = np.random.default_rng(2)
        images, labels = rng.integers(0, 256, (40_000, 28, 28), dtype=np.uint8), np.arange(40_000) % 5
        np.savez(folder / "images.npz", x=images, y=labels)
        with (folder / "big.bin").open("wb") as handle:
            handle.truncate(1024**3)  # 1 GiB of zeros (sparse on disk)
        server = Server(folder / "data")
        try:
            with open_metadata_store(f"sqlite:///{server.data}/condense.db") as metadata:
                metadata.create_user("bench", max_running_jobs=100)
                token = metadata.create_token("bench")
            auth = {"Authorization": f"Bearer {token}"}

            def upload(path: Path) -> str:
                status, body = server.request(
                    "POST",
                    f"/api/v1/uploads?filename={path.name}",
                    lambda: path.open("rb"),
                    **auth,
                    **{"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)},
                )
                if status != 201:
                    raise RuntimeError(f"upload of {path.name}: {status} {body[:200]!r}")
                return str(json.loads(body)["upload"]["id"])

            def submit(teacher: Path, positives: Path) -> str:
                body = json.dumps(
                    {
                        "teacher_upload": upload(teacher),
                        "positives_upload": upload(positives),
                        "options": {"input_shape": [1, 28, 28]},
                    }
                ).encode()
                status, answer = server.request(
                    "POST", "/api/v1/jobs", body, **auth, **{"Content-Type": "application/json"}
                )
                return f"{status} {answer[:160].decode(errors='replace')}"

            def multipart(path: Path) -> str:
                boundary = "condense-bench-boundary"
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                tail = f"\r\n--{boundary}--\r\n".encode()

                def body():
                    yield head
                    with path.open("rb") as handle:
                        while chunk := handle.read(1024**2):
                            yield chunk
                    yield tail

                length = len(head) + path.stat().st_size + len(tail)
                headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
                return str(server.request("POST", "/api/v1/uploads", body, **auth, **headers)[0])

            small_zip = folder / "small.zip"
            _positives_zip(small_zip, 50)
            submit(teachers["small"], small_zip)  # first submission: the check modules' lazy parts
            small, script, onnx_file = teachers["small"], teachers["torchscript"], teachers["onnx"]
            big = folder / "big.bin"
            many, reversed_tar, npy = folder / "many.zip", folder / "reversed.tar.gz", folder / "images.npz"
            cases: list[tuple[str, Path, Callable[[], str]]] = [
                ("TorchScript teacher, 101 MB", script, lambda: submit(script, small_zip)),
                ("ONNX teacher, 101 MB", onnx_file, lambda: submit(onnx_file, small_zip)),
                ("positives zip, 100,000 PNGs", many, lambda: submit(small, many)),
                ("positives tar.gz, 260 members, names reversed", reversed_tar, lambda: submit(small, reversed_tar)),
                ("raw upload, 1 GiB (stored, not submitted)", big, lambda: upload(big)),
                ("multipart upload, 1 GiB (stored, not submitted)", big, lambda: multipart(big)),
                ("positives .npz, 40,000 images (32 MiB per member at most)", npy, lambda: submit(small, npy)),
            ]  # fmt: skip
            rows = []
            idle = _status(server.worker)["VmRSS"] / 1024
            for name, path, run in cases:
                Path(f"/proc/{server.worker}/clear_refs").write_text("5")
                before = _status(server.worker)["VmRSS"] / 1024
                started = time.monotonic()
                outcome = run()
                peak = _status(server.worker)["VmHWM"] / 1024
                rows.append(
                    {
                        "case": name,
                        "file_mib": round(path.stat().st_size / MiB, 1),
                        "rss_before_mib": round(before, 1),
                        "peak_growth_mib": round(peak - before, 1),
                        "seconds": round(time.monotonic() - started, 1),
                        "answer": outcome,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    result = {
        "command": "python -m bench.bench_upload_memory",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "idle_rss_mib": round(idle, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
