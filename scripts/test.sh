#!/usr/bin/env bash
# The project's test command (README.md, step 2): install what the tests need, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: real images for the tests (the benchmark task's Fashion-MNIST), and the servers the scale-out
# contract tests run for real on loopback (PostgreSQL; tests/storage/conftest.py starts it as a non-root user; Redis for
# the job queue, tests/service/test_worker.py); headless Chromium and its driver for the web pages' browser tests
# (tests/service/test_web.py).
debian_packages=(dataset-fashion-mnist g++ postgresql redis-server chromium chromium-driver)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Animal-MNIST's data files for the benchmark pool; --no-deps: the package's own loader pulls tensorflow, unused here.
python3 -m pip install --quiet --disable-pip-version-check --no-deps 'animal-mnist==0.4'
python3 -m ruff check .
python3 -m ruff format --check .
# Layering (the contracts in pyproject.toml: compression imports nothing of ours, only service imports Flask, no
# import cycles, service's layers) and types of the packages that are clean today.
lint-imports
python3 -m mypy storage/ service/ compression/ pu_mining/
python3 -m pytest -q "$@"
