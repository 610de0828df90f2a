"""The job metadata contract, run against every backend (SQLite file; a real PostgreSQL server)."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage import (
    JOB_STATUSES,
    SCHEMA_VERSION,
    Job,
    JobNotFoundError,
    MetadataSchemaError,
    MetadataStore,
    open_metadata_store,
)
from tests.clock import FakeClock

SHA = "ab" * 32


@pytest.fixture
def alice(meta: MetadataStore) -> str:
    meta.create_user("alice")
    return "alice"


@pytest.fixture
def bob(meta: MetadataStore) -> str:
    meta.create_user("bob", max_running_jobs=1)
    return "bob"


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) on threads released at the same moment."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# --------------------------------------------------------------------------------------------------
# opening, schema


def test_open_is_idempotent_and_keeps_data(metadata_url: str, clock: FakeClock) -> None:
    with open_metadata_store(metadata_url, clock=clock) as first:
        first.create_user("alice", role="admin")
        job = first.create_job("alice", {"family": "ghost"})
        assert first.schema_version() == SCHEMA_VERSION
    with open_metadata_store(metadata_url, clock=clock) as second, open_metadata_store(metadata_url) as third:
        assert second.get_user("alice") is not None
        assert third.get_job(job.id) == job
        assert second.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(metadata_url: str) -> None:
    with open_metadata_store(metadata_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_info SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(MetadataSchemaError, match="99"):
        open_metadata_store(metadata_url)


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    with open_metadata_store(f"sqlite:///{tmp_path}/sub/dir/m.db") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    assert (tmp_path / "sub" / "dir" / "m.db").is_file()


def test_postgres_url_spellings_map_to_psycopg3(postgres_url: str) -> None:
    for scheme in ("postgres://", "postgresql+psycopg://"):
        with open_metadata_store(scheme + postgres_url.split("://", 1)[1]) as store:
            assert store.engine.dialect.driver == "psycopg"
            assert store.dialect == "postgresql"
            assert store.schema_version() == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("mysql://u@h/db", "unsupported metadata URL scheme"),
        ("postgresql+psycopg2://u@h/db", "unsupported metadata URL scheme"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql://u@localhost", "names no database"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_metadata_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_metadata_store(url)


# --------------------------------------------------------------------------------------------------
# users and tokens


def test_users(meta: MetadataStore, clock: FakeClock) -> None:
    created = meta.create_user("zed", role="admin", max_running_jobs=5)
    meta.create_user("amy")
    assert created.is_admin
    assert created.created_at == clock.now
    assert meta.get_user("zed") == created
    assert meta.get_user("nobody") is None
    assert [u.name for u in meta.list_users()] == ["amy", "zed"]
    assert meta.get_user("amy").max_running_jobs == 2  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already exists"):
        meta.create_user("zed")
    with pytest.raises(ValueError, match="role"):
        meta.create_user("carl", role="root")
    with pytest.raises(ValueError, match="invalid user name"):
        meta.create_user("bad name")
    with pytest.raises(ValueError, match="max_running_jobs"):
        meta.create_user("carl", max_running_jobs=-1)
    with pytest.raises(TypeError):
        meta.create_user("carl", max_running_jobs=True)  # type: ignore[arg-type]


def test_tokens_are_stored_only_as_hashes(meta: MetadataStore, alice: str, bob: str) -> None:
    token = meta.create_token(alice, label="laptop")
    assert re.fullmatch(r"cdn_[A-Za-z0-9_-]{43}", token)
    assert meta.create_token(alice) != token
    user = meta.authenticate(token)
    assert user is not None
    assert user.name == alice
    assert meta.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert meta.authenticate("") is None
    assert meta.authenticate("not-a-token") is None

    with meta.engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.text("SELECT * FROM api_tokens"))]
    stored = repr(rows)
    assert token not in stored
    assert token[4:] not in stored  # not even without the prefix
    assert hashlib.sha256(token.encode()).hexdigest() in stored

    listed = meta.list_tokens(alice)
    assert [t.label for t in listed] == ["laptop", ""]
    assert token not in repr(listed)
    assert meta.list_tokens(bob) == []


def test_token_revocation(meta: MetadataStore, alice: str, bob: str) -> None:
    first = meta.create_token(alice, label="first")
    second = meta.create_token(alice, label="second")
    first_id = meta.list_tokens(alice)[0].id
    assert meta.revoke_token(first_id, user_name=bob) is False  # not bob's token
    assert meta.authenticate(first) is not None
    assert meta.revoke_token(first_id, user_name=alice) is True
    assert meta.authenticate(first) is None
    assert meta.revoke_token(first_id) is False  # already revoked
    assert meta.list_tokens(alice)[0].revoked
    assert meta.revoke_token(second) is True  # by the token text
    assert meta.authenticate(second) is None
    with pytest.raises(ValueError, match="no user"):
        meta.create_token("ghost")


# --------------------------------------------------------------------------------------------------
# jobs


def test_create_and_get_job(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    spec = {"family": "ghost", "budget_ratio": 0.25, "nested": {"list": [1, 2, None], "text": "ü"}}
    job = meta.create_job(alice, spec)
    assert re.fullmatch(r"[0-9a-f]{32}", job.id)
    assert (job.status, job.owner, job.spec, job.attempts) == ("queued", alice, spec, 0)
    assert job.created_at == job.updated_at == clock.now
    assert job.metrics == {}
    assert not job.cancel_requested
    assert meta.get_job(job.id) == job
    assert meta.get_job("0" * 32) is None
    assert job.as_dict()["spec"] == spec
    with pytest.raises(TypeError, match="spec must be a dict"):
        meta.create_job(alice, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        meta.create_job(alice, {"x": object()})
    with pytest.raises(ValueError, match="JSON"):
        meta.create_job(alice, {"x": float("nan")})
    with pytest.raises(ValueError, match="no user"):
        meta.create_job("mallory", {})


def test_owner_isolation(meta: MetadataStore, alice: str, bob: str) -> None:
    a1 = meta.create_job(alice, {"n": 1})
    b1 = meta.create_job(bob, {"n": 2})
    assert meta.get_job(a1.id, owner=alice) == a1
    assert meta.get_job(a1.id, owner=bob) is None
    assert meta.get_job(b1.id, owner=alice) is None
    assert [j.id for j in meta.list_jobs(owner=alice)] == [a1.id]
    assert [j.id for j in meta.list_jobs(owner=bob)] == [b1.id]
    assert meta.claim_job(a1.id, "w", 60)
    assert (meta.count_running(alice), meta.count_running(bob)) == (1, 0)


def test_list_jobs_newest_first_with_filters(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        ids.append(meta.create_job(alice, {"i": i}).id)
        clock.advance(1)
    assert [j.id for j in meta.list_jobs()] == ids[::-1]
    assert [j.id for j in meta.list_jobs(limit=2)] == ids[:2:-1]
    assert meta.claim_job(ids[1], "w", 60)
    assert [j.id for j in meta.list_jobs(status="running")] == [ids[1]]
    assert [j.id for j in meta.list_jobs(status=["running", "queued"], owner=alice)] == ids[::-1]
    with pytest.raises(ValueError, match="unknown status"):
        meta.list_jobs(status="done")
    with pytest.raises(ValueError, match="limit"):
        meta.list_jobs(limit=0)


def test_update_job_merges_metrics(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    job = meta.create_job(alice, {})
    assert meta.claim_job(job.id, "w1", 60)
    clock.advance(5)
    updated = meta.update_job(job.id, stage="mining", progress=0.25, metrics={"pool": 1000, "loss": 2.5}, eta_s=120)
    assert (updated.stage, updated.progress, updated.eta_s) == ("mining", 0.25, 120.0)
    assert updated.updated_at == clock.now
    updated = meta.update_job(job.id, metrics={"loss": 1.5, "acc": 0.9})
    assert updated.metrics == {"pool": 1000, "loss": 1.5, "acc": 0.9}
    assert (updated.stage, updated.progress) == ("mining", 0.25)  # None leaves fields alone
    assert meta.get_job(job.id) == updated
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="progress"):
            meta.update_job(job.id, progress=bad)
    with pytest.raises(ValueError, match="JSON"):
        meta.update_job(job.id, metrics={"loss": float("inf")})
    with pytest.raises(JobNotFoundError):
        meta.update_job("f" * 32, stage="x")


def test_concurrent_metric_updates_all_merge(meta: MetadataStore, metadata_url: str, alice: str) -> None:
    """Read-modify-write of the metrics is atomic: no writer's keys are lost (SQLite: BEGIN IMMEDIATE)."""
    job = meta.create_job(alice, {})
    with open_metadata_store(metadata_url) as other:
        stores = [meta, other]
        run_concurrently(6, lambda i: [stores[i % 2].update_job(job.id, metrics={f"w{i}-{n}": n}) for n in range(4)])
    assert meta.get_job(job.id).metrics == {f"w{i}-{n}": n for i in range(6) for n in range(4)}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("setup", "target"),
    [
        ("queued", "succeeded"),
        ("queued", "running"),
        ("succeeded", "failed"),
        ("succeeded", "queued"),
        ("failed", "succeeded"),
        ("cancelled", "queued"),
        ("cancelled", "running"),
    ],
)
def test_invalid_status_transitions(meta: MetadataStore, alice: str, setup: str, target: str) -> None:
    job = meta.create_job(alice, {})
    if setup in ("succeeded", "failed", "cancelled"):
        assert meta.claim_job(job.id, "w", 60)
        assert meta.finish_job(job.id, "w", setup)
    before = meta.get_job(job.id)
    with pytest.raises(ValueError):
        meta.update_job(job.id, status=target)
    assert meta.get_job(job.id) == before  # nothing changed


def test_valid_status_transitions(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {})
    assert meta.update_job(job.id, status="queued").status == "queued"  # same status: no change
    assert meta.claim_job(job.id, "w1", 60)
    back = meta.update_job(job.id, status="queued")  # put back: worker and lease cleared
    assert (back.status, back.worker_id, back.lease_expires_at) == ("queued", None, None)
    assert meta.claim_job(job.id, "w2", 60)
    assert meta.get_job(job.id).attempts == 2  # type: ignore[union-attr]
    failed = meta.update_job(job.id, status="failed", error="out of memory")
    assert (failed.status, failed.error, failed.lease_expires_at) == ("failed", "out of memory", None)
    assert failed.finished_at is not None
    other = meta.create_job(alice, {})
    assert meta.update_job(other.id, status="failed", error="bad upload").status == "failed"
    with pytest.raises(ValueError, match="unknown status"):
        meta.update_job(other.id, status="done")
    with pytest.raises(ValueError, match="final status"):
        meta.finish_job(other.id, "w", "queued")
    with pytest.raises(ValueError, match="no error"):
        meta.finish_job(other.id, "w", "succeeded", error="x")


def test_claim_race_has_exactly_one_winner(
    meta: MetadataStore, metadata_url: str, alice: str, clock: FakeClock
) -> None:
    job = meta.create_job(alice, {})
    # half the claimants share the store, half come through their own (like other processes) on the same clock
    with open_metadata_store(metadata_url, clock=clock) as other:
        stores = [meta, other]
        results = run_concurrently(8, lambda i: stores[i % 2].claim_job(job.id, f"worker-{i}", 60))
    assert sorted(results) == [False] * 7 + [True]
    claimed = meta.get_job(job.id)
    assert claimed is not None
    assert (claimed.status, claimed.worker_id, claimed.attempts) == ("running", f"worker-{results.index(True)}", 1)


def test_lease_expiry_and_reclaim(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    job = meta.create_job(alice, {})
    assert meta.claim_job(job.id, "w1", 30)
    started = meta.get_job(job.id)
    assert started is not None
    assert (started.status, started.lease_expires_at, started.started_at) == ("running", clock.now + 30, clock.now)
    assert not meta.claim_job(job.id, "w2", 30)  # held
    assert not meta.heartbeat(job.id, "w2", 30)  # not w2's
    clock.advance(20)
    assert meta.heartbeat(job.id, "w1", 30)  # lease now ends 50 s after the claim
    clock.advance(25)
    assert meta.expired_jobs() == []
    assert not meta.claim_job(job.id, "w2", 30)
    clock.advance(10)
    assert [j.id for j in meta.expired_jobs()] == [job.id]
    assert meta.expired_jobs(now=clock.now - 10) == []
    assert meta.claim_job(job.id, "w2", 30)
    reclaimed = meta.get_job(job.id)
    assert reclaimed is not None
    assert (reclaimed.worker_id, reclaimed.attempts, reclaimed.started_at) == ("w2", 2, started.started_at)
    assert not meta.heartbeat(job.id, "w1", 30)  # the old worker learns it lost the job
    assert not meta.finish_job(job.id, "w1", "succeeded")
    assert meta.finish_job(job.id, "w2", "succeeded")
    done = meta.get_job(job.id)
    assert done is not None
    assert (done.status, done.progress, done.lease_expires_at, done.finished_at) == (
        "succeeded",
        1.0,
        None,
        clock.now,
    )
    assert not meta.claim_job(job.id, "w3", 30)
    assert not meta.claim_job("0" * 32, "w3", 30)  # missing job: nothing to claim
    with pytest.raises(ValueError, match="lease_s"):
        meta.claim_job(job.id, "w3", 0)


def test_cancellation(meta: MetadataStore, alice: str, clock: FakeClock) -> None:
    queued = meta.create_job(alice, {})
    cancelled = meta.request_cancel(queued.id)
    assert (cancelled.status, cancelled.cancel_requested) == ("cancelled", True)
    assert not meta.claim_job(queued.id, "w", 60)

    running = meta.create_job(alice, {})
    assert meta.claim_job(running.id, "w", 60)
    flagged = meta.request_cancel(running.id)
    assert (flagged.status, flagged.cancel_requested) == ("running", True)
    assert meta.heartbeat(running.id, "w", 60)  # the worker still holds it and sees the flag
    assert meta.get_job(running.id).cancel_requested  # type: ignore[union-attr]
    assert meta.finish_job(running.id, "w", "cancelled", error="cancelled by the user")
    assert meta.request_cancel(running.id).status == "cancelled"  # final: unchanged

    abandoned = meta.create_job(alice, {})
    assert meta.claim_job(abandoned.id, "w", 60)
    meta.request_cancel(abandoned.id)
    clock.advance(61)
    assert not meta.claim_job(abandoned.id, "w2", 60)  # expired and cancel-flagged: cancelled, not rerun
    assert meta.get_job(abandoned.id).status == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(JobNotFoundError):
        meta.request_cancel("0" * 32)


def test_count_running(meta: MetadataStore, alice: str) -> None:
    jobs = [meta.create_job(alice, {}) for _ in range(3)]
    assert meta.count_running(alice) == 0
    assert meta.claim_job(jobs[0].id, "w", 60)
    assert meta.claim_job(jobs[1].id, "w", 60)
    assert meta.count_running(alice) == 2
    assert meta.finish_job(jobs[0].id, "w", "failed", error="boom")
    assert meta.count_running(alice) == 1


# --------------------------------------------------------------------------------------------------
# events, artifacts, deletion


def test_events_are_ordered_and_resumable(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {})
    other = meta.create_job(alice, {})
    ids = []
    for i in range(5):
        ids.append(meta.append_event(job.id, "progress", {"epoch": i}))
        meta.append_event(other.id, "log", {"line": i})
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    events = meta.events_since(job.id)
    assert [e.id for e in events] == ids
    assert [e.data for e in events] == [{"epoch": i} for i in range(5)]
    assert {e.kind for e in events} == {"progress"}
    assert [e.id for e in meta.events_since(job.id, after_id=ids[2])] == ids[3:]
    assert [e.id for e in meta.events_since(job.id, after_id=ids[0], limit=2)] == ids[1:3]
    assert meta.events_since(job.id, after_id=ids[-1]) == []
    with pytest.raises(JobNotFoundError):
        meta.append_event("0" * 32, "log", {})
    with pytest.raises(TypeError):
        meta.append_event(job.id, "log", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_concurrent_event_appends_lose_nothing(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {})
    run_concurrently(4, lambda i: [meta.append_event(job.id, "log", {"t": i, "n": n}) for n in range(5)])
    events = meta.events_since(job.id)
    assert len(events) == 20
    assert [e.id for e in events] == sorted({e.id for e in events})
    for t in range(4):  # each writer's events in its own order
        assert [e.data["n"] for e in events if e.data["t"] == t] == list(range(5))


def test_artifacts(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {})
    meta.add_artifact(job.id, "student.onnx", f"jobs/{job.id}/student.onnx", 1234, SHA)
    meta.add_artifact(job.id, "report.json", f"jobs/{job.id}/report.json", 56, "cd" * 32)
    assert [(a.name, a.size) for a in meta.list_artifacts(job.id)] == [("report.json", 56), ("student.onnx", 1234)]
    meta.add_artifact(job.id, "student.onnx", f"jobs/{job.id}/student-2.onnx", 999, "ef" * 32)  # a retried job
    replaced = {a.name: a for a in meta.list_artifacts(job.id)}["student.onnx"]
    assert (replaced.blob_key, replaced.size, replaced.sha256) == (f"jobs/{job.id}/student-2.onnx", 999, "ef" * 32)
    with pytest.raises(ValueError, match="sha256"):
        meta.add_artifact(job.id, "x", "k", 1, "AB" * 32)
    with pytest.raises(ValueError, match="size"):
        meta.add_artifact(job.id, "x", "k", -1, SHA)
    with pytest.raises(JobNotFoundError):
        meta.add_artifact("0" * 32, "x", "k", 1, SHA)
    assert meta.list_artifacts("0" * 32) == []


def test_delete_job_removes_events_and_artifacts(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {})
    keep = meta.create_job(alice, {})
    meta.append_event(job.id, "log", {})
    meta.append_event(keep.id, "log", {})
    meta.add_artifact(job.id, "a", "k", 1, SHA)
    assert meta.delete_job(job.id)
    assert meta.get_job(job.id) is None
    assert meta.events_since(job.id) == []
    assert meta.list_artifacts(job.id) == []
    assert not meta.delete_job(job.id)
    assert len(meta.events_since(keep.id)) == 1
    with meta.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM job_events")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM artifacts")).scalar() == 0


def test_records_are_frozen_copies(meta: MetadataStore, alice: str) -> None:
    job = meta.create_job(alice, {"a": [1]})
    with pytest.raises(AttributeError):
        job.status = "running"  # type: ignore[misc]
    job.spec["a"].append(2)
    assert meta.get_job(job.id).spec == {"a": [1]}  # type: ignore[union-attr]
    assert set(JOB_STATUSES) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert isinstance(job, Job)
