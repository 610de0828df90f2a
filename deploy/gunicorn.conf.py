"""gunicorn's configuration for containers: ``gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'``.

The settings live in :mod:`service.gunicorn_conf` (installed with the package, so ``condense serve`` finds them
without this folder); this file only re-exports them. Configure with the ``CONDENSE_*`` variables
(``CONDENSE_BIND``, ``CONDENSE_WEB_WORKERS``, ``CONDENSE_WEB_THREADS``, ``CONDENSE_LOG_LEVEL``,
``CONDENSE_FORWARDED_ALLOW_IPS``).
"""

from service.gunicorn_conf import *  # noqa: F403
