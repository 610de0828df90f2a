"""The blob storage contract, run against every backend (local folder; S3 on a moto server)."""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest

from storage import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
)
from tests.storage.conftest import S3Server, no_proxy_opener


class BoomError(Exception):
    pass


def keys_of(store: BlobStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def stray_files(store: BlobStore) -> list[str]:
    """Files under a local store's root that are not listed blobs (temporary files left behind)."""
    if not isinstance(store, LocalBlobStore):
        return []
    listed = set(keys_of(store))
    found = [p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()]
    return sorted(set(found) - listed)


# --------------------------------------------------------------------------------------------------
# round trips


def test_put_get_round_trip_and_overwrite(blob_store: BlobStore) -> None:
    blob_store.put_bytes("jobs/1/teacher.onnx", b"\x00\x01binary\xff")
    assert blob_store.get_bytes("jobs/1/teacher.onnx") == b"\x00\x01binary\xff"
    assert blob_store.exists("jobs/1/teacher.onnx")
    assert blob_store.size("jobs/1/teacher.onnx") == 9
    blob_store.put_bytes("jobs/1/teacher.onnx", b"v2")
    assert blob_store.get_bytes("jobs/1/teacher.onnx") == b"v2"
    assert blob_store.size("jobs/1/teacher.onnx") == 2
    blob_store.put_bytes("empty", b"")
    assert blob_store.get_bytes("empty") == b""
    assert blob_store.size("empty") == 0
    assert not blob_store.exists("jobs/1")  # a "folder" is not a blob
    assert not blob_store.exists("jobs/1/teacher")


def test_unusual_but_valid_keys(blob_store: BlobStore) -> None:
    keys = [".hidden", "a..b/c", "spaces in name/ü ñ 日本.txt", "x" * 200 + "/" + "y" * 200, "a~b=c+d@e!"]
    for i, key in enumerate(keys):
        blob_store.put_bytes(key, str(i).encode())
    for i, key in enumerate(keys):
        assert blob_store.get_bytes(key) == str(i).encode()
    assert keys_of(blob_store) == sorted(keys)


def test_put_file_and_download(blob_store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    payload = random.Random(1).randbytes(300_000)
    source.write_bytes(payload)
    blob_store.put_file("in/source.bin", source)
    assert blob_store.size("in/source.bin") == len(payload)

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    target.write_bytes(b"old content")
    blob_store.download("in/source.bin", target)
    assert target.read_bytes() == payload
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.bin"]  # no temporary file left

    with pytest.raises(FileNotFoundError):
        blob_store.put_file("in/missing.bin", tmp_path / "does-not-exist")
    assert not blob_store.exists("in/missing.bin")


def test_missing_blob_raises_blob_not_found(blob_store: BlobStore, tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    target = tmp_path / "dest" / "target.bin"
    target.write_bytes(b"keep me")
    for call in (
        lambda: blob_store.get_bytes("nope/missing"),
        lambda: blob_store.open_read("nope/missing"),
        lambda: blob_store.size("nope/missing"),
        lambda: blob_store.download("nope/missing", target),
    ):
        with pytest.raises(BlobNotFoundError) as info:
            call()
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, FileNotFoundError)
        assert info.value.key == "nope/missing"
        assert "nope/missing" in str(info.value)
    assert target.read_bytes() == b"keep me"  # a failed download leaves the destination alone
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.bin"]
    assert not blob_store.exists("nope/missing")
    blob_store.delete("nope/missing")  # not an error


def test_open_read_is_a_proper_binary_file(blob_store: BlobStore) -> None:
    blob_store.put_bytes("text/lines.txt", b"first\nsecond\nthird\n")
    with blob_store.open_read("text/lines.txt") as handle:
        assert handle.readable()
        assert handle.read(3) == b"fir"
        assert handle.readline() == b"st\n"
        buffer = bytearray(4)
        assert handle.readinto(buffer) == 4
        assert bytes(buffer) == b"seco"
        assert list(handle) == [b"nd\n", b"third\n"]
        assert handle.read() == b""
    assert handle.closed
    with blob_store.open_read("text/lines.txt") as handle:
        assert io.BufferedReader(handle).read() == b"first\nsecond\nthird\n"  # wraps like any raw file


# --------------------------------------------------------------------------------------------------
# atomic writes


def test_open_write_appears_only_when_the_block_succeeds(blob_store: BlobStore) -> None:
    with blob_store.open_write("out/report.json") as handle:
        handle.write(b'{"ok": ')
        assert not blob_store.exists("out/report.json")  # not visible while being written
        handle.write(b"true}")
    assert blob_store.get_bytes("out/report.json") == b'{"ok": true}'
    assert stray_files(blob_store) == []


def test_open_write_exception_stores_nothing(blob_store: BlobStore) -> None:
    with pytest.raises(BoomError), blob_store.open_write("out/new.bin") as handle:
        handle.write(b"half")
        raise BoomError
    assert not blob_store.exists("out/new.bin")
    assert keys_of(blob_store) == []
    assert stray_files(blob_store) == []

    blob_store.put_bytes("out/old.bin", b"old")
    with pytest.raises(BoomError), blob_store.open_write("out/old.bin") as handle:
        handle.write(b"new but broken")
        raise BoomError
    assert blob_store.get_bytes("out/old.bin") == b"old"  # the previous blob survives
    assert keys_of(blob_store) == ["out/old.bin"]
    assert stray_files(blob_store) == []


def test_open_write_closed_inside_the_block_is_refused(blob_store: BlobStore) -> None:
    with pytest.raises(ValueError, match="closed"), blob_store.open_write("out/closed.bin") as handle:
        handle.write(b"data")
        handle.close()
    assert not blob_store.exists("out/closed.bin")
    assert stray_files(blob_store) == []


def test_large_streamed_write_and_read(blob_store: BlobStore) -> None:
    """20 MB in 1 MiB chunks (S3: spooled to disk, then a multipart upload); streamed back."""
    chunk = random.Random(7).randbytes(1 << 20)
    total, digest = 0, hashlib.sha256()
    with blob_store.open_write("big/pool.index") as handle:
        for i in range(20):
            part = bytes([i]) + chunk[1:]
            handle.write(part)
            digest.update(part)
            total += len(part)
    assert blob_store.size("big/pool.index") == total == 20 * (1 << 20)
    read_digest, read_total = hashlib.sha256(), 0
    with blob_store.open_read("big/pool.index") as handle:
        while block := handle.read(1 << 20):
            read_digest.update(block)
            read_total += len(block)
    assert read_total == total
    assert read_digest.hexdigest() == digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# keys


BAD_KEYS = [
    ("", "empty"),
    ("/abs/key", "starts with '/'"),
    ("a//b", "empty part"),
    ("a/b/", "empty part"),
    (".", "'.' part"),
    ("a/./b", "'.' part"),
    ("..", "'..' part"),
    ("a/../../etc/passwd", "'..' part"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("a\nb", "non-printable"),
    ("tab\there", "non-printable"),
    ("k" * 1025, "longer than 1024"),
    ("é" * 513, "longer than 1024"),  # 513 characters, 1026 bytes
]


@pytest.mark.parametrize(("key", "why"), BAD_KEYS, ids=[why for _, why in BAD_KEYS])
def test_invalid_keys_are_refused_with_the_reason(blob_store: BlobStore, key: str, why: str, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls = [
        lambda: blob_store.put_bytes(key, b"x"),
        lambda: blob_store.put_file(key, source),
        lambda: blob_store.open_write(key),
        lambda: blob_store.get_bytes(key),
        lambda: blob_store.open_read(key),
        lambda: blob_store.download(key, tmp_path / "d"),
        lambda: blob_store.exists(key),
        lambda: blob_store.size(key),
        lambda: blob_store.delete(key),
        lambda: blob_store.local_path(key),
        lambda: blob_store.presigned_url(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=why):
            call()
    assert keys_of(blob_store) == []
    assert not (tmp_path / "etc").exists()


def test_non_string_keys_and_data(blob_store: BlobStore) -> None:
    with pytest.raises(TypeError):
        blob_store.put_bytes(Path("a"), b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        blob_store.put_bytes("a", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blob prefix"):
        list(blob_store.list("/abs"))
    with pytest.raises(ValueError, match="non-empty prefix"):
        blob_store.delete_prefix("")


# --------------------------------------------------------------------------------------------------
# listing and deleting


LISTED = ["a-c", "a/b", "a/c/d", "a/c/e", "a0", "ab/x", "b", "B", "z/y/x/w"]


def fill(store: BlobStore) -> None:
    for key in random.Random(3).sample(LISTED, len(LISTED)):
        store.put_bytes(key, key.encode() * 2)


def test_list_is_sorted_and_filters_by_string_prefix(blob_store: BlobStore) -> None:
    fill(blob_store)
    assert list(blob_store.list()) == [BlobInfo(k, 2 * len(k)) for k in sorted(LISTED)]
    assert keys_of(blob_store) == ["B", "a-c", "a/b", "a/c/d", "a/c/e", "a0", "ab/x", "b", "z/y/x/w"]
    assert keys_of(blob_store, "a/") == ["a/b", "a/c/d", "a/c/e"]
    assert keys_of(blob_store, "a") == ["a-c", "a/b", "a/c/d", "a/c/e", "a0", "ab/x"]
    assert keys_of(blob_store, "a/c") == ["a/c/d", "a/c/e"]
    assert keys_of(blob_store, "a/c/d") == ["a/c/d"]
    assert keys_of(blob_store, "z/y/") == ["z/y/x/w"]
    assert keys_of(blob_store, "nothing") == []
    assert keys_of(blob_store, "a/b/") == []


def test_list_pages_through_many_keys(blob_store: BlobStore) -> None:
    if isinstance(blob_store, S3BlobStore):
        blob_store._page_size = 2  # several ListObjectsV2 pages without thousands of objects
    keys = [f"many/{i:03d}" for i in range(7)]
    for key in reversed(keys):
        blob_store.put_bytes(key, b"1")
    assert keys_of(blob_store, "many/") == keys
    assert blob_store.delete_prefix("many/") == 7
    assert keys_of(blob_store) == []


def test_delete_and_delete_prefix(blob_store: BlobStore) -> None:
    fill(blob_store)
    blob_store.delete("a/c/d")
    assert not blob_store.exists("a/c/d")
    blob_store.delete("a/c/d")  # twice is fine
    assert blob_store.delete_prefix("a/") == 2  # a/b and a/c/e; not a-c, a0 or ab/x
    assert keys_of(blob_store) == ["B", "a-c", "a0", "ab/x", "b", "z/y/x/w"]
    assert blob_store.delete_prefix("a/") == 0
    assert blob_store.delete_prefix("z") == 1
    assert keys_of(blob_store) == ["B", "a-c", "a0", "ab/x", "b"]
    if isinstance(blob_store, LocalBlobStore):  # folders go with their last blob, as on S3
        assert not (blob_store.root / "a").exists()
        assert not (blob_store.root / "z").exists()
        assert blob_store.root.is_dir()


# --------------------------------------------------------------------------------------------------
# locations


def test_local_path(blob_store: BlobStore) -> None:
    blob_store.put_bytes("index/pool.faiss", b"faiss bytes")
    path = blob_store.local_path("index/pool.faiss")
    if isinstance(blob_store, LocalBlobStore):
        assert path is not None
        assert path.is_absolute()
        assert path.read_bytes() == b"faiss bytes"
        with pytest.raises(BlobNotFoundError):
            blob_store.local_path("index/missing")
    else:
        assert path is None


def test_presigned_url_downloads_the_blob(blob_store: BlobStore) -> None:
    payload = b"student onnx bytes " * 100
    blob_store.put_bytes("jobs/9/student.onnx", payload)
    url = blob_store.presigned_url("jobs/9/student.onnx", expires_s=600)
    if isinstance(blob_store, LocalBlobStore):
        assert url is None
    else:
        assert url is not None
        assert url.startswith("http")
        with no_proxy_opener().open(url, timeout=10) as response:
            assert response.read() == payload
    for bad in (0, -5, 8 * 24 * 3600):
        with pytest.raises(ValueError, match="expires_s"):
            blob_store.presigned_url("jobs/9/student.onnx", expires_s=bad)
    with pytest.raises(TypeError):
        blob_store.presigned_url("jobs/9/student.onnx", expires_s=1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# backend specifics


def test_local_key_cannot_be_both_blob_and_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put_bytes("a", b"file")
    with pytest.raises(ValueError, match="already a blob"):
        store.put_bytes("a/b", b"x")
    store.put_bytes("c/d", b"x")
    with pytest.raises(ValueError, match="folder"):
        store.put_bytes("c", b"x")
    assert keys_of(store) == ["a", "c/d"]


def test_local_list_skips_foreign_and_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put_bytes("real", b"1")
    (store.root / ".real.abc.tmp\\").write_bytes(b"partial")  # what an interrupted write leaves
    (store.root / "bad\nname").write_bytes(b"x")
    assert keys_of(store) == ["real"]


def test_s3_store_without_prefix_and_prefix_isolation(s3_env: S3Server, s3_bucket: str) -> None:
    root = S3BlobStore(s3_bucket, endpoint_url=s3_env.endpoint_url)
    inner = S3BlobStore(s3_bucket, prefix="/tenant/", endpoint_url=s3_env.endpoint_url)
    sibling = S3BlobStore(s3_bucket, prefix="tenant2", endpoint_url=s3_env.endpoint_url)
    assert inner.prefix == "tenant"
    inner.put_bytes("k", b"inner")
    sibling.put_bytes("k", b"sibling")
    root.put_bytes("top", b"root")
    assert keys_of(root) == ["tenant/k", "tenant2/k", "top"]
    assert keys_of(inner) == ["k"]  # "tenant2/..." does not leak into prefix "tenant"
    assert inner.delete_prefix("k") == 1
    assert sibling.get_bytes("k") == b"sibling"


# --------------------------------------------------------------------------------------------------
# URLs


def test_open_blob_store_local_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_blob_store(f"file://{tmp_path}/by-url")
    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "by-url").resolve()
    plain = open_blob_store(str(tmp_path / "plain"))
    assert isinstance(plain, LocalBlobStore)
    assert plain.root == (tmp_path / "plain").resolve()
    monkeypatch.chdir(tmp_path)
    relative = open_blob_store("./rel:ative")
    assert isinstance(relative, LocalBlobStore)
    assert relative.root == (tmp_path / "rel:ative").resolve()
    spaced = open_blob_store(f"file://{tmp_path}/with%20space")
    assert isinstance(spaced, LocalBlobStore)
    assert spaced.root.name == "with space"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://host/x", "unknown blob store URL scheme 'ftp'"),
        ("gs://bucket", "unknown blob store URL scheme 'gs'"),
        ("file://otherhost/x", "names a host"),
        ("file:relative/path", "absolute path"),
        ("s3://", "no bucket"),
        ("s3://Bad_Bucket/x", "invalid S3 bucket name"),
        ("s3://bucket/p?endpoint=http://x", "unknown query parameters"),
        ("s3://bucket/p?endpoint_url=", "exactly one non-empty value"),
        ("s3://bucket/a//b", "empty part"),
    ],
)
def test_open_blob_store_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_blob_store(url)


def test_open_blob_store_s3_url_and_endpoint_sources(
    s3_env: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_blob_store(f"s3://{s3_bucket}/some/prefix?endpoint_url={s3_env.endpoint_url}")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == (s3_bucket, "some/prefix")
    store.put_bytes("k", b"via url")
    assert open_blob_store(f"s3://{s3_bucket}?endpoint_url={s3_env.endpoint_url}").get_bytes("some/prefix/k") == (
        b"via url"
    )

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # loses to the caller's endpoint
    monkeypatch.delenv("CONDENSE_S3_ENDPOINT_URL", raising=False)  # settings read it, not the store
    from_settings = open_blob_store(f"s3://{s3_bucket}/some/prefix", s3_endpoint_url=s3_env.endpoint_url)
    assert isinstance(from_settings, S3BlobStore)
    assert from_settings.client.meta.endpoint_url == s3_env.endpoint_url
    assert from_settings.get_bytes("k") == b"via url"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint_url)
    from_aws_env = open_blob_store(f"s3://{s3_bucket}/some/prefix")
    assert isinstance(from_aws_env, S3BlobStore)
    assert from_aws_env.client.meta.endpoint_url == s3_env.endpoint_url


# --------------------------------------------------------------------------------------------------
# package hygiene


def test_storage_imports_no_web_framework_torch_or_other_condense_packages() -> None:
    code = (
        "import sys, storage, storage.blobs, storage.metadata\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'torch', 'compression', 'pu_mining', 'service'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == ""
