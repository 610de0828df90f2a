"""The image's HEALTHCHECK: exit 0 when ``GET /api/v1/health`` on this container's ``CONDENSE_BIND`` port answers 200.

For containers that serve HTTP (``condense serve``, gunicorn); job-worker containers turn the check off. Standard
library only, so it costs no heavy import every interval.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    bind = os.environ.get("CONDENSE_BIND", "0.0.0.0:8000")
    if bind.startswith("unix:"):
        print(f"healthcheck: CONDENSE_BIND={bind} is a socket, not a port", file=sys.stderr)
        return 1
    port = bind.rpartition(":")[2]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:  # 503 (a store unreachable) arrives as HTTPError
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
