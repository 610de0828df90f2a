"""The ``condense`` command line (``condense = service.cli:main``).

- :mod:`service.cli.main`: the parser and :func:`main` (one-line errors, exit statuses);
- :mod:`service.cli.models`: ``students``, ``profile``, ``distill`` (the compression library alone);
- :mod:`service.cli.compress`: ``compress``, one whole job on this machine;
- :mod:`service.cli.service_commands`: ``serve``, ``worker``, ``user``, ``token``, ``submit``, ``status``,
  ``download``, ``cancel``;
- :mod:`service.cli.pools`, :mod:`service.cli.demo_pool`: ``pool ...`` and the demo pool;
- :mod:`service.cli.example`: ``example``, a first teacher and positives;
- :mod:`service.cli.serve`: what ``condense serve`` runs (gunicorn and job workers);
- :mod:`service.cli.client`: the HTTP client of the API; :mod:`service.cli.progress`: the one progress renderer.
"""

from service.cli.main import main

__all__ = ["main"]
