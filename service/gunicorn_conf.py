"""gunicorn's configuration of the Condense app.

``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'``.

``condense serve`` uses it; ``deploy/gunicorn.conf.py`` re-exports it for containers. Read by gunicorn once at
start-up, from the same :class:`~service.settings.Settings` as the app: ``CONDENSE_BIND``, ``CONDENSE_WEB_WORKERS``,
``CONDENSE_WEB_THREADS``, ``CONDENSE_LOG_LEVEL``, ``CONDENSE_FORWARDED_ALLOW_IPS``.

Threaded workers (``gthread``): an event stream (``GET /jobs/{id}/events``) holds a thread for up to
``CONDENSE_SSE_MAX_S``, not a whole process; each worker has ``CONDENSE_WEB_THREADS + CONDENSE_SSE_STREAMS`` threads
and admits at most ``CONDENSE_SSE_STREAMS`` streams, so open streams never starve other requests. ``timeout`` is
gunicorn's worker-heartbeat limit, not a request limit; long uploads are fine. Access logs go to stdout,
errors to stderr.
"""

from __future__ import annotations

from service.log_setup import quiet_third_party
from service.settings import Settings

_settings = Settings.from_env()
quiet_third_party(_settings.log_level)  # the teacher checks import torch and onnx in the web workers

bind = _settings.bind
workers = _settings.web_workers
# Event streams get threads of their own: a worker serves at most CONDENSE_SSE_STREAMS of them (service.api.events),
# so CONDENSE_WEB_THREADS threads always remain for every other request (/health among them).
threads = _settings.web_threads + _settings.sse_streams
worker_class = "gthread"
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
# Headers of large multipart uploads can be long; the body itself is bounded by CONDENSE_MAX_*_BYTES in the app.
limit_request_field_size = 16384
# Whose X-Forwarded-Proto is believed (CONDENSE_FORWARDED_ALLOW_IPS): loopback unless the proxies' addresses are given.
forwarded_allow_ips = _settings.forwarded_allow_ips
# gunicorn >= 25 opens a control socket under $HOME by default: a read-only home in a container, and two servers on one
# machine sharing its path. Not used by Condense.
control_socket_disable = True


def on_starting(server: object) -> None:
    """In the master, before any worker: private data folder, and no scratch left by an earlier run."""
    from service.jobs.scratch import make_private, sweep_scratch, sweep_upload_temporaries

    make_private(_settings.data_dir)
    sweep_scratch(_settings.tmp_dir, all_folders=True)
    sweep_upload_temporaries(_settings.blob_url)


def post_worker_init(worker: object) -> None:
    """In each new worker: remove the scratch of workers that died (``kill -9`` mid-upload), and import what the
    upload checks use (torch, onnx: seconds) in the background, so the first submission does not wait for it."""
    import threading

    from service.jobs.scratch import sweep_scratch

    sweep_scratch(_settings.tmp_dir)
    threading.Thread(target=_warm_checks, name="condense-warm-checks", daemon=True).start()


def _warm_checks() -> None:
    import gc
    import importlib

    for module in (
        "compression.teachers.archive",
        "compression.teachers.detect",
        "compression.metrics.graph_ops",
        "compression.export.onnx",
        "pu_mining.image_files",
        "pu_mining.positives",
        "pu_mining.pool",
    ):
        importlib.import_module(module)
    # torch and onnx bring ~280,000 long-lived objects; a full collection over them takes 0.1-0.3 s and stalls every
    # request of the worker. Frozen objects are never scanned again (objects made later are collected as usual).
    gc.collect()
    gc.freeze()
