"""The ``condense`` command line.

Every subcommand reports bad input, and an operating-system error (disk full, permission denied, a folder where a
file was expected, a lost connection), as one line on stderr and a non-zero exit status, never a traceback.
Heavy imports (torch, onnxruntime) happen inside the subcommands so ``condense --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from service.cli.compress import add_compress_command
from service.cli.example import add_example_command
from service.cli.models import add_model_commands
from service.cli.pools import add_pool_commands
from service.cli.service_commands import add_service_commands

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "build_parser", "describe_os_error", "main"]

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condense", description="Model compression: Ghost, binary and adder students."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_model_commands(commands)
    add_service_commands(commands)
    add_pool_commands(commands)
    add_compress_command(commands)
    add_example_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP's default is to spin while waiting for work: on CPUs shared with other busy processes that makes torch
    # about 20x slower (measured on 2 busy cores: a Ghost student's training step took 4.7 s instead of 0.27 s).
    # Passive waiting costs little on an idle machine. Set before any torch import; an explicit value wins. Child
    # processes (``condense serve``'s gunicorn and workers) inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from service.cli.client import ApiError

    try:
        status = args.run(args)
        sys.stdout.flush()  # `condense token create NAME > file` on a full disk fails here, not silently at exit
        return status
    except ApiError as error:  # the server refused the request, or could not be reached
        print(f"condense {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE if 400 <= error.status < 500 else EXIT_FAILED
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"condense {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as error:  # e.g. a failed ONNX verification
        print(f"condense {args.command}: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:  # disk full, permission denied, a folder where a file was expected, a lost connection
        _drop_unwritable_stdout()
        print(f"condense {args.command}: failed: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_FAILED


def describe_os_error(error: OSError) -> str:
    """``OSError`` as one line without the errno: ``'<path>: No space left on device'``."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _drop_unwritable_stdout() -> None:
    """After stdout itself failed (a full disk behind ``>``), discard what it still buffers, so the interpreter's
    flush at exit does not print a second error."""
    try:
        sys.stdout.flush()
    except OSError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
