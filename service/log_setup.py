"""Logging of the service's processes: one line format, and third-party libraries kept quiet.

faiss announces at INFO which of its builds it loaded ("Could not load library with AVX2 support" on machines
without it: harmless), and the ONNX exporter (torch.onnx, onnxscript, onnx_ir) logs each export step at INFO.
Those loggers are set to WARNING unless ``CONDENSE_LOG_LEVEL=DEBUG``, so the service's own lines stay readable.
"""

from __future__ import annotations

import logging

__all__ = ["NOISY_LOGGERS", "configure_logging", "quiet_third_party"]

NOISY_LOGGERS = ("faiss", "faiss.loader", "torch", "torch.onnx", "torch.export", "onnxscript", "onnx_ir", "PIL")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_third_party(level: str) -> None:
    """Set :data:`NOISY_LOGGERS` to WARNING, unless ``level`` is DEBUG (then they say everything)."""
    quiet = str(level).upper() != "DEBUG"
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def configure_logging(level: str) -> None:
    """The root logger at ``level`` (a name such as INFO) with the service's format; third parties quiet."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), format=_FORMAT)
    quiet_third_party(level)
