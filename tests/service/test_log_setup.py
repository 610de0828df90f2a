"""Third-party INFO lines (faiss's build announcement, the ONNX exporter's steps) stay out of the service's logs
unless CONDENSE_LOG_LEVEL=DEBUG."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from service.log_setup import NOISY_LOGGERS, quiet_third_party

_PROBE = """
import logging, sys
from service.log_setup import configure_logging
configure_logging(sys.argv[1])
import faiss  # announces the build it loaded at INFO
logging.getLogger("service.probe").info("service line")
"""


def _run(level: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, level], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stderr


@pytest.mark.slow  # two interpreters importing faiss
def test_faiss_is_quiet_at_info_and_heard_at_debug() -> None:
    info = _run("INFO")
    assert "service line" in info and "faiss" not in info
    debug = _run("DEBUG")
    assert "faiss.loader" in debug


def test_quiet_third_party_levels() -> None:
    try:
        quiet_third_party("INFO")
        assert all(logging.getLogger(name).level == logging.WARNING for name in NOISY_LOGGERS)
        quiet_third_party("DEBUG")
        assert all(logging.getLogger(name).level == logging.NOTSET for name in NOISY_LOGGERS)
    finally:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
