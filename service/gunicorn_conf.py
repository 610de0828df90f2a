"""gunicorn's configuration of the Condense app.

``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'``.

``condense serve`` uses it; ``deploy/gunicorn.conf.py`` re-exports it for containers. Read by gunicorn once at
start-up, from the same :class:`~service.settings.Settings` as the app: ``CONDENSE_BIND``, ``CONDENSE_WEB_WORKERS``,
``CONDENSE_WEB_THREADS``, ``CONDENSE_LOG_LEVEL``.

Threaded workers (``gthread``): an event stream (``GET /jobs/{id}/events``) holds a thread for up to
``CONDENSE_SSE_MAX_S``, not a whole process. ``timeout`` is gunicorn's worker-heartbeat limit, not a request limit;
long uploads are fine. Access logs go to stdout, errors to stderr.
"""

from __future__ import annotations

from service.log_setup import quiet_third_party
from service.settings import Settings

_settings = Settings.from_env()
quiet_third_party(_settings.log_level)  # the teacher checks import torch and onnx in the web workers

bind = _settings.bind
workers = _settings.web_workers
threads = _settings.web_threads
worker_class = "gthread"
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()
# Headers of large multipart uploads can be long; the body itself is bounded by CONDENSE_MAX_*_BYTES in the app.
limit_request_field_size = 16384
forwarded_allow_ips = "127.0.0.1"
# gunicorn >= 25 opens a control socket under $HOME by default: a read-only home in a container, and two servers on one
# machine sharing its path. Not used by Condense.
control_socket_disable = True
