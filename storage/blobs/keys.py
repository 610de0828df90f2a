"""Blob keys and listing prefixes: the rules every backend applies (see :mod:`storage.blobs`), and the checks of
the other arguments the backends share (presigned-URL lifetimes, byte strings)."""

from __future__ import annotations

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PRESIGN_SECONDS",
    "check_bytes",
    "check_expiry",
    "check_parts",
    "validate_key",
    "validate_prefix",
]

#: Longest key accepted, in UTF-8 bytes (S3's own limit; 1024 ASCII characters).
MAX_KEY_BYTES = 1024
#: Longest presigned URL lifetime: seven days, the most SigV4 allows.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def check_parts(text: str, what: str, *, allow_trailing_slash: bool) -> None:
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    if "\\" in text:
        raise ValueError(f"{what} {text!r} contains a backslash; use '/' to separate parts")
    if not text.isprintable():
        raise ValueError(f"{what} {text!r} contains non-printable characters")
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"{what} is longer than {MAX_KEY_BYTES} bytes in UTF-8")
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} starts with '/'; keys are relative")
    parts = text.split("/")
    if allow_trailing_slash and len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part == "":
            raise ValueError(f"{what} {text!r} has an empty part ('//' or a trailing '/')")
        if part in (".", ".."):
            raise ValueError(f"{what} {text!r} has a {part!r} part")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid blob key; raise :class:`ValueError` (``TypeError``) saying why not."""
    if not isinstance(key, str):
        raise TypeError(f"a blob key must be a str, got {type(key).__name__}")
    if key == "":
        raise ValueError("a blob key must not be empty")
    check_parts(key, "blob key", allow_trailing_slash=False)
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid listing prefix (``""``, a key, or a key followed by ``/``).

    Prefixes match keys as strings, as on S3: ``"runs/a"`` matches ``runs/a``, ``runs/ab`` and
    ``runs/a/x``; ``"runs/a/"`` only the keys inside the folder ``runs/a``.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"a blob prefix must be a str, got {type(prefix).__name__}")
    if prefix:
        check_parts(prefix, "blob prefix", allow_trailing_slash=True)
    return prefix


def check_expiry(expires_s: object) -> int:
    if isinstance(expires_s, bool) or not isinstance(expires_s, int):
        raise TypeError(f"expires_s must be an int number of seconds, got {type(expires_s).__name__}")
    if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires_s must be between 1 and {MAX_PRESIGN_SECONDS} seconds, got {expires_s}")
    return expires_s


def check_bytes(data: object) -> bytes | bytearray | memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return data
