"""The ``CONDENSE_*`` variables of :class:`~service.settings.Settings`: name, field, default and meaning of each.

The one description of the service's settings: ``docs/settings.md``'s table is generated from :data:`VARIABLES`
(``python -m service.settings_doc`` prints it) and ``tests/service/test_settings.py`` fails when the file is stale
or when a :class:`Settings` field has no variable here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VARIABLES", "Variable", "markdown_table"]


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the :class:`Settings` field it sets, its default and its meaning."""

    name: str
    field: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CONDENSE_DATA_DIR",
        "data_dir",
        "`$XDG_DATA_HOME/condense`, else `~/.local/share/condense`, else `./condense-data`",
        (
            "Where the embedded defaults keep their files: SQLite databases, local blobs, worker scratch space, "
            "the pool cache, `first-token`, `secret_key`."
        ),
    ),
    Variable(
        "CONDENSE_DATABASE_URL",
        "database_url",
        "`sqlite:////<data dir>/condense.db`",
        "Job metadata, users and tokens: `sqlite:///path` or `postgresql://user:pw@host:5432/db`.",
    ),
    Variable(
        "CONDENSE_BLOB_URL",
        "blob_url",
        "`file:///<data dir>/blobs`",
        (
            "Uploads, artefacts, checkpoints and pools: `file:///path` (or a plain path) or `s3://bucket/prefix` "
            "(endpoint from `?endpoint_url=`, else `CONDENSE_S3_ENDPOINT_URL`; credentials the usual boto3 way)."
        ),
    ),
    Variable(
        "CONDENSE_S3_ENDPOINT_URL",
        "s3_endpoint_url",
        "unset (AWS itself, or `AWS_ENDPOINT_URL`)",
        ("The S3 endpoint for MinIO, Ceph and other S3-compatible stores, when the blob URL has no `?endpoint_url=`."),
    ),
    Variable(
        "CONDENSE_BROKER_URL",
        "broker_url",
        "`sqlite:////<data dir>/queue.db`",
        (
            "The job queue (Huey): `sqlite:///path` (one machine, no server) or `redis://host:6379/0` "
            "(`rediss://` for TLS)."
        ),
    ),
    Variable(
        "CONDENSE_WORK_DIR",
        "work_dir",
        "`<data dir>/work`",
        (
            "A worker's scratch space: one folder per job with its inputs and checkpoints, kept while the job is "
            "unfinished."
        ),
    ),
    Variable(
        "CONDENSE_MAX_UPLOAD_BYTES",
        "max_upload_bytes",
        "`2G`",
        "Largest positives archive (and any one upload). `K`, `M`, `G` suffixes are binary units.",
    ),
    Variable(
        "CONDENSE_MAX_TEACHER_BYTES",
        "max_teacher_bytes",
        "`512M`",
        "Largest teacher model file (the web process reads it into memory to check its format).",
    ),
    Variable(
        "CONDENSE_MAX_POSITIVES_FILES",
        "max_positives_files",
        "`100000`",
        "Most members of a positives archive.",
    ),
    Variable(
        "CONDENSE_LEASE_S",
        "lease_s",
        "`60`",
        (
            "A running job's lease in seconds: its worker renews it every third of this; a job whose lease ran "
            "out is taken over."
        ),
    ),
    Variable(
        "CONDENSE_POLL_S",
        "poll_s",
        "`1.0`",
        ("How often a worker checks its running job for a cancel request (a cancel stops the work within about this)."),
    ),
    Variable(
        "CONDENSE_MAX_ATTEMPTS",
        "max_attempts",
        "`3`",
        "How many times a job is started before losing its worker once more makes it fail.",
    ),
    Variable(
        "CONDENSE_REAPER_INTERVAL_S",
        "reaper_interval_s",
        "`30`",
        "How often each worker looks for jobs whose worker was lost.",
    ),
    Variable(
        "CONDENSE_CHECKPOINT_SYNC_S",
        "checkpoint_sync_s",
        "`300`",
        (
            "How often (and at every stage change) a worker copies a job's checkpoints to blob storage so that "
            "another machine can resume it; `0` turns this off (one machine)."
        ),
    ),
    Variable(
        "CONDENSE_UPLOAD_TTL_S",
        "upload_ttl_s",
        "`86400`",
        "Uploads (`POST /api/v1/uploads`) that no job took within this are deleted.",
    ),
    Variable(
        "CONDENSE_WORKER_HEARTBEAT_FILE",
        "worker_heartbeat_file",
        "unset (no file)",
        (
            "`condense worker` writes this file at start and touches it from its work loop (waiting for jobs and "
            "during a job's stop checks and progress reports); `condense worker --check-heartbeat MAX_AGE_S` exits 1 "
            "when it is older, a liveness probe for a process that serves no HTTP. One file per worker process: "
            "`condense serve` does not pass it to its workers."
        ),
    ),
    Variable(
        "CONDENSE_WORKER_HEARTBEAT_S",
        "worker_heartbeat_s",
        "`5`",
        "At most how often the heartbeat file is touched (the loop may touch it less often during a long step).",
    ),
    Variable(
        "CONDENSE_WORKERS",
        "workers",
        "`1`",
        (
            "Job worker processes `condense serve` starts (`condense worker` is always one). `condense serve "
            "--workers N` overrides it."
        ),
    ),
    Variable(
        "CONDENSE_NUM_THREADS",
        "num_threads",
        "unset (their defaults: torch follows `OMP_NUM_THREADS`, else the machine's cores; ONNX Runtime the cores)",
        (
            "Threads a job worker gives torch and ONNX Runtime for mining and distillation (`run_compression"
            "(num_threads=...)`). Set it to the CPUs the worker may use (a container's CPU limit): more threads "
            "than CPUs makes training several times slower under a CPU quota."
        ),
    ),
    Variable(
        "CONDENSE_WEB_WORKERS",
        "web_workers",
        "`2`",
        "gunicorn worker processes (`condense serve --web-workers N`).",
    ),
    Variable(
        "CONDENSE_WEB_THREADS",
        "web_threads",
        "`8`",
        (
            "Threads per gunicorn worker for requests other than event streams (streams get "
            "`CONDENSE_SSE_STREAMS` more threads of their own)."
        ),
    ),
    Variable(
        "CONDENSE_BIND",
        "bind",
        "`127.0.0.1:8000`",
        ("gunicorn's listening address (`0.0.0.0:8000` in containers, or `unix:/path.sock`; `condense serve --bind`)."),
    ),
    Variable(
        "CONDENSE_FORWARDED_ALLOW_IPS",
        "forwarded_allow_ips",
        "`127.0.0.1,::1`",
        (
            "gunicorn's `forwarded_allow_ips`: the proxies (IP addresses or networks such as `10.0.0.0/8`, comma-"
            "separated; `*` for any) whose `X-Forwarded-Proto` is believed, so a request that reached a "
            "TLS-terminating proxy over HTTPS counts as HTTPS. Loopback only by default: a proxy on the same machine."
        ),
    ),
    Variable(
        "CONDENSE_SSE_MAX_S",
        "sse_max_s",
        "`300`",
        ("Longest one `/events` response streams before it closes (the client reconnects with `Last-Event-ID`)."),
    ),
    Variable(
        "CONDENSE_SSE_KEEPALIVE_S",
        "sse_keepalive_s",
        "`15`",
        "Keep-alive comment interval of an event stream.",
    ),
    Variable(
        "CONDENSE_SSE_STREAMS",
        "sse_streams",
        "`64`",
        (
            "Event streams one gunicorn worker serves at once, on threads added to `CONDENSE_WEB_THREADS` (so "
            "streams never take the threads of other requests); past it `/events` answers 503 with `Retry-After`."
        ),
    ),
    Variable(
        "CONDENSE_SSE_STREAMS_PER_USER",
        "sse_streams_per_user",
        "`4`",
        "Event streams one user may hold open on one gunicorn worker; past it `/events` answers 429 (`Retry-After`).",
    ),
    Variable(
        "CONDENSE_UPLOAD_QUOTA_BYTES",
        "upload_quota_bytes",
        "`4G`",
        "Bytes of uploads one user may keep at once (their jobs' inputs included); past it uploads answer 413.",
    ),
    Variable(
        "CONDENSE_SESSION_TTL_S",
        "session_ttl_s",
        "`43200`",
        "Lifetime of a web sign-in (12 hours); signing out ends it at once.",
    ),
    Variable(
        "CONDENSE_LOG_LEVEL",
        "log_level",
        "`INFO`",
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`.",
    ),
    Variable(
        "CONDENSE_SECRET_KEY",
        "session_key",
        "made on first start, kept in `<data dir>/secret_key`",
        (
            "Signs the web pages' session cookies; at least 32 characters. Set it or `CONDENSE_SECRET_KEY_FILE` "
            "(the same everywhere) when several machines with separate data directories serve the pages."
        ),
    ),
    Variable(
        "CONDENSE_SECRET_KEY_FILE",
        "session_key_file",
        "unset",
        (
            "A file holding the session key (a mounted Kubernetes Secret or compose secret; surrounding whitespace "
            "is dropped), read once at start-up: a file that cannot be read or holds under 32 characters stops "
            "the command with a message naming it. Setting it and `CONDENSE_SECRET_KEY` both is an error."
        ),
    ),
    Variable(
        "CONDENSE_SECURE_COOKIES",
        "secure_cookies",
        "`0`",
        (
            "`1` marks the session cookie `Secure` (sent over HTTPS only): set it wherever the pages are served "
            "over HTTPS, a TLS-terminating proxy included. Off by default because the embedded server speaks "
            "plain HTTP on 127.0.0.1, where a browser would drop a Secure cookie."
        ),
    ),
    Variable(
        "CONDENSE_DEMO_POOL",
        "demo_pool",
        "`1`",
        (
            "`condense serve` builds the demo pool (pool `demo`, 4,500 packaged real images, about 20 s on 2 CPU "
            "cores) on first start when it does not exist; `0` skips it (build it later with `condense pool "
            "demo`). Also accepts `true`/`false`, `yes`/`no`, `on`/`off`."
        ),
    ),
    Variable(
        "CONDENSE_PIPELINE",
        "pipeline",
        "unset",
        "**Tests only**: `module:function` run instead of `service.pipeline.run_compression`.",
    ),
)


def markdown_table() -> str:
    """The variables as the Markdown table of ``docs/settings.md``."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
