"""``python -m service.cli``: the ``condense`` command (how ``condense serve`` starts its job workers)."""

import sys

from service.cli.main import main

sys.exit(main())
