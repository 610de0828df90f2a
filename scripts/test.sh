#!/usr/bin/env bash
# The project's test command (README.md, step 2): install the project with its test tools, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m pytest -q "$@"
