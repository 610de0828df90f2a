"""``GET /live``, ``GET /health``, ``GET /openapi.json`` (all public) and ``GET /pools``.

``/live`` is the liveness probe: it answers 200 whenever this process serves requests and touches nothing else, so an
outage of PostgreSQL, Redis or S3 never restarts web processes. ``/health`` is the readiness probe: it checks them.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from flask import jsonify, request

from service.api import API_PREFIX, api, api_jobs, api_user
from service.errors import ServiceError

logger = logging.getLogger(__name__)


@api.get("/live")
def live() -> Any:
    """This process serves requests (no auth; no store, queue or blob store is touched)."""
    return jsonify({"status": "alive"})


@api.get("/health")
def health() -> Any:
    """Whether this process reaches the metadata store, the blob store and the queue (no auth)."""
    checks: dict[str, str] = {}
    try:
        jobs = api_jobs()
    except Exception as error:
        logger.warning("health: cannot open the stores: %s", error)
        return jsonify({"status": "unavailable", "checks": {"startup": type(error).__name__}}), 503
    probes = {
        "metadata": lambda: jobs.metadata.schema_version(),
        "blobs": lambda: list(itertools.islice(jobs.blobs.list("health/"), 1)),
        "queue": lambda: jobs.queue.pending(),
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as error:  # the type only: this answer is public, the details go to the log
            logger.warning("health: %s unreachable: %s", name, error)
            checks[name] = f"unreachable ({type(error).__name__})"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if healthy else "unavailable", "checks": checks}), 200 if healthy else 503


@api.get("/openapi.json")
def openapi() -> Any:
    """The OpenAPI 3.1 description of this API (no auth)."""
    from service.api.openapi import openapi_document

    return jsonify(openapi_document())


@api.get("/pools")
def pools() -> Any:
    """The unlabelled pools a job can mine (``options.pool``)."""
    from pu_mining.pool import PoolStore

    store = PoolStore(api_jobs().blobs)
    return jsonify({"pools": [pool.as_dict() for pool in store.list()]})


_INGEST_FIELDS = frozenset({"upload_id", "image_size", "channels"})


@api.post("/pools/<name>/ingest")
def ingest_pool(name: str) -> Any:
    """Queue a job adding the images of an upload to pool ``name`` (created when new); admins only.

    JSON body ``{"upload_id": ..., "image_size": 32, "channels": 1}`` (sizes for a new pool only; see
    :mod:`service.jobs.pool_ingest`). 201 with the job; follow it like any job.
    """
    from service.api.jobs import json_body
    from service.jobs.pool_ingest import submit_pool_ingest

    jobs, user = api_jobs(), api_user()
    if not user.is_admin:
        raise ServiceError(403, "adding images to a pool needs the admin role")
    if not request.is_json:
        raise ServiceError(415, 'send JSON naming an upload: {"upload_id": ...} (see openapi.json)')
    body = json_body()
    unknown = sorted(set(body) - _INGEST_FIELDS)
    if unknown:
        reasons = [{"field": field, "reason": "unknown field"} for field in unknown]
        raise ServiceError(400, f"unknown field(s): {', '.join(unknown)}", reasons)
    upload = jobs.get_upload(user, body.get("upload_id"), field="upload_id")
    job = submit_pool_ingest(jobs, user, name, upload, image_size=body.get("image_size"), channels=body.get("channels"))
    response = jsonify(jobs.view(job))
    response.status_code = 201
    response.headers["Location"] = f"{API_PREFIX}/jobs/{job.id}"
    return response
