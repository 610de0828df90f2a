"""Server-side web sessions, token expiry, atomic upload claims and per-user job limits, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from storage import SCHEMA_VERSION, JobLimitError, MetadataStore, UploadClaimedError, open_metadata_store
from tests.clock import FakeClock


@pytest.fixture
def alice(meta: MetadataStore) -> str:
    meta.create_user("alice", max_running_jobs=2)
    return "alice"


def test_sessions_end_on_sign_out_and_expire(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    first = meta.sessions.create(alice, ttl_s=60)
    second = meta.sessions.create(alice, ttl_s=600)
    assert first.startswith("cds_") and first != second
    assert meta.sessions.lookup(first).user_name == alice
    assert meta.sessions.end(first) and not meta.sessions.end(first)
    assert meta.sessions.lookup(first) is None  # ended: a replayed cookie stops working
    clock.advance(601)
    assert meta.sessions.lookup(second) is None  # expired
    assert meta.sessions.lookup("cds_not-a-session") is None and meta.sessions.lookup("x") is None
    assert meta.sessions.purge(older_than_s=0) == 2


def test_tokens_expire(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    short = meta.create_token(alice, "ci", expires_in_s=30)
    forever = meta.create_token(alice, "laptop")
    assert meta.authenticate(short).name == alice
    clock.advance(31)
    assert meta.authenticate(short) is None and meta.authenticate(forever).name == alice
    listed = {token.label: token for token in meta.list_tokens(alice)}
    assert listed["ci"].expired(clock()) and not listed["laptop"].expired(clock())
    with pytest.raises(ValueError, match="expires_in_s"):
        meta.create_token(alice, expires_in_s=0)


def test_concurrent_jobs_claiming_one_upload_exactly_one_wins(meta: MetadataStore, alice: str) -> None:
    meta.create_user("bob", max_running_jobs=100)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        try:
            meta.create_job("bob", {"n": 1}, upload_ids=["u" * 32, "v" * 32], max_active=100)
            outcomes.append("created")
        except UploadClaimedError:
            outcomes.append("claimed")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed", "claimed", "claimed", "created"]
    assert len(meta.list_jobs("bob")) == 1
    job = meta.list_jobs("bob")[0]
    meta.delete_job(job.id)  # deleting the job frees its claims
    meta.create_job("bob", {"n": 2}, upload_ids=["u" * 32])


def test_the_job_limit_is_atomic(meta: MetadataStore, alice: str) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        try:
            meta.create_job(alice, {}, max_active=2)
            outcomes.append("created")
        except JobLimitError as error:
            assert error.limit == 2
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 4
    assert len(meta.list_jobs(alice, status="queued")) == 2


def test_a_version_1_database_gains_token_expiry(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    with open_metadata_store(url) as store:
        store.create_user("carol")
        token = store.create_token("carol")
        with store.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE api_tokens DROP COLUMN expires_at"))
            conn.execute(sa.text("UPDATE schema_info SET value = '1' WHERE key = 'schema_version'"))
    with open_metadata_store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.authenticate(token).name == "carol"
