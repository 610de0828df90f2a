"""The OpenAPI 3.1 document of ``/api/v1`` (served at ``GET /api/v1/openapi.json``).

The schemas of what the service validates are generated from their pydantic models: ``JobOptions``
(:class:`service.options.JobOptions`) and the error envelope ``Error`` / ``ErrorDetail`` / ``FieldError``
(:mod:`service.errors`). The paths and the job view are written here, next to the views they describe;
``tests/service/test_api.py`` checks that every route of the blueprint is in the document with its methods.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from service.errors import ErrorBody
from service.options import JobOptions

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request (bad JSON, missing part, unknown upload)",
        401: "No API token, or an invalid / revoked one",
        403: "The action needs the admin role",
        404: "No such job or artefact (another user's job is a 404 as well)",
        409: "The job's state forbids this (finished, running, upload already used)",
        413: "An upload is over its size limit or the user's upload quota (the message says which)",
        415: "Wrong file type: a pickled model, not a model, not an image archive",
        422: "Understood but unusable: invalid options, unsafe or undecodable archive",
        429: "Too many queued and running jobs, or open event streams, for this user (see Retry-After)",
        503: "A backend (metadata, blobs, queue) is unreachable, or this server's event streams are full",
    }
    return {str(status): _json(_ref("Error"), reasons[status]) for status in statuses}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}

_BOUND_KEYWORDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _standard(schema: Any) -> Any:
    """pydantic writes the bounds of an optional number (``X | None``) as ``gt``/``ge``/``lt``/``le`` inside its
    ``anyOf``; JSON Schema calls them ``exclusiveMinimum``/``minimum``/``exclusiveMaximum``/``maximum``."""
    if isinstance(schema, dict):
        return {_BOUND_KEYWORDS.get(key, key): _standard(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_standard(item) for item in schema]
    return schema


def _component(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema as an OpenAPI 3.1 component (nested models referenced as components too)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        _GENERATED[name] = _standard(nested)
    return _standard(schema)


_GENERATED: dict[str, Any] = {}
_GENERATED["JobOptions"] = _component(JobOptions)
_GENERATED["Error"] = _component(ErrorBody)

_SCHEMAS: dict[str, Any] = {
    **_GENERATED,
    "JobInput": {
        "type": "object",
        "description": "An uploaded input and what its check found (format, input shape, classes, ...)",
        "properties": {
            "upload_id": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "format": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "Artifact": {
        "type": "object",
        "required": ["name", "size", "sha256", "url"],
        "properties": {
            "name": {"type": "string", "examples": ["student.onnx", "report.json", "report.html"]},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "url": {"type": "string", "description": "Download path under /api/v1"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "status", "options", "inputs", "artifacts", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "kind": {
                "type": "string",
                "enum": ["compress", "pool_ingest"],
                "description": "compress: a model compression; pool_ingest: images added to a pool (admins)",
            },
            "pool": {"type": ["string", "null"], "description": "The pool a pool_ingest job adds to"},
            "owner": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "stage": {"type": ["string", "null"]},
            "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "eta_s": {"type": ["number", "null"], "description": "Seconds left, estimated"},
            "error": {"type": ["string", "null"]},
            "metrics": {"type": "object", "description": "The pipeline's summary: accuracies, sizes, ..."},
            "attempts": {"type": "integer"},
            "cancel_requested": {"type": "boolean"},
            "queue_position": {
                "type": ["integer", "null"],
                "description": "Queued jobs (of every user) submitted before this one; null unless queued",
            },
            "created_at": {"type": "number", "description": "Seconds since the Unix epoch"},
            "updated_at": {"type": "number"},
            "started_at": {"type": ["number", "null"]},
            "finished_at": {"type": ["number", "null"]},
            "options": _ref("JobOptions"),
            "inputs": {
                "type": "object",
                "properties": {
                    "teacher": _ref("JobInput"),
                    "positives": _ref("JobInput"),
                    "test": _ref("JobInput"),
                    "images": _ref("JobInput"),
                },
            },
            "artifacts": {"type": "array", "items": _ref("Artifact")},
        },
    },
    "JobList": {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}},
    "Upload": {
        "type": "object",
        "required": ["id", "size", "sha256"],
        "properties": {
            "id": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "created_at": {"type": "number"},
        },
    },
    "UploadList": {
        "type": "object",
        "required": ["uploads", "used_bytes", "quota_bytes"],
        "properties": {
            "uploads": {
                "type": "array",
                "items": {
                    "allOf": [
                        _ref("Upload"),
                        {
                            "type": "object",
                            "properties": {
                                "job_id": {"type": ["string", "null"], "description": "The job that took it"}
                            },
                        },
                    ]
                },
            },
            "used_bytes": {"type": "integer"},
            "quota_bytes": {"type": "integer"},
        },
    },
    "Token": {
        "type": "object",
        "required": ["id", "label", "created_at", "state"],
        "properties": {
            "id": {"type": "integer"},
            "label": {"type": "string"},
            "created_at": {"type": "number"},
            "expires_at": {"type": ["number", "null"]},
            "revoked_at": {"type": ["number", "null"]},
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
        },
    },
    "StatusEvent": {
        "type": "object",
        "description": "SSE 'event: status' data: the job's new status",
        "required": ["status", "created_at"],
        "properties": {
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
            "error": {"type": ["string", "null"]},
            "created_at": {"type": "number"},
        },
    },
    "ProgressEvent": {
        "type": "object",
        "description": "SSE 'event: progress' data: stage, fraction done and ETA",
        "required": ["created_at"],
        "properties": {
            "stage": {"type": "string"},
            "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "eta_s": {"type": ["number", "null"]},
            "created_at": {"type": "number"},
        },
        "additionalProperties": True,
    },
    "CancelRequestedEvent": {
        "type": "object",
        "description": "SSE 'event: cancel_requested' data",
        "properties": {"message": {"type": "string"}, "created_at": {"type": "number"}},
    },
    "EndEvent": {
        "description": "SSE 'event: end' data (no id): the final job, or {id, status: 'deleted'}; the stream closes",
        "oneOf": [
            _ref("Job"),
            {
                "type": "object",
                "required": ["id", "status"],
                "properties": {"id": {"type": "string"}, "status": {"const": "deleted"}},
            },
        ],
    },
    "JobFromUploads": {
        "type": "object",
        "required": ["teacher_upload"],
        "additionalProperties": False,
        "properties": {
            "teacher_upload": {"type": "string", "description": "Upload id of the model file"},
            "positives_upload": {
                "type": "string",
                "description": "Upload id of the positives archive; leave out for the no-labels mode (DFND selection)",
            },
            "test_upload": {
                "type": "string",
                "description": "Optional upload id of a labelled test set (the positives' format and classes); "
                "its figures are the report's headline",
            },
            "options": _ref("JobOptions"),
        },
    },
    "JobFromFiles": {
        "type": "object",
        "required": ["teacher"],
        "properties": {
            "teacher": {
                "type": "string",
                "format": "binary",
                "description": "TorchScript (torch.jit.save), torch.export (.pt2) or ONNX; pickles are refused",
            },
            "positives": {
                "type": "string",
                "format": "binary",
                "description": "zip / tar archive with one folder per class, or .npz with 'x' and 'y'",
            },
            "test": {
                "type": "string",
                "format": "binary",
                "description": "optional labelled test set, the positives' format and classes, never trained on; "
                "its figures are the report's headline",
            },
            "options": {"type": "string", "description": "JobOptions as a JSON string"},
        },
    },
    "Pool": {"type": "object", "additionalProperties": True, "properties": {"name": {"type": "string"}}},
    "Liveness": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["alive"]}},
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}

_PATHS: dict[str, Any] = {
    "/live": {
        "get": {
            "operationId": "live",
            "summary": "Liveness: this process serves requests (checks nothing else; the readiness check is /health)",
            "security": [],
            "responses": {"200": _json(_ref("Liveness"), "Serving")},
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Readiness: whether the metadata store, blob store and queue are reachable",
            "security": [],
            "responses": {
                "200": _json(_ref("Health"), "All reachable"),
                "503": _json(_ref("Health"), "Something is unreachable"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
        }
    },
    "/pools": {
        "get": {
            "operationId": "listPools",
            "summary": "The unlabelled pools jobs can mine",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"pools": {"type": "array", "items": _ref("Pool")}}},
                    "The pools",
                ),
                **_errors(401),
            },
        }
    },
    "/pools/{name}/ingest": {
        "post": {
            "operationId": "ingestPool",
            "summary": "Queue a job adding an upload's images to a pool, created when new (admins only)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["upload_id"],
                            "properties": {
                                "upload_id": {"type": "string", "description": "An archive from POST /uploads"},
                                "image_size": {"type": "integer", "description": "New pools: stored side (8-256)"},
                                "channels": {"type": "integer", "enum": [1, 3], "description": "New pools only"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _json(_ref("Job"), "The queued job"),
                **_errors(400, 401, 403, 409, 413, 415, 422, 429),
            },
        }
    },
    "/uploads": {
        "post": {
            "operationId": "createUpload",
            "summary": "Store one file for a later POST /jobs (raw body with ?filename=, or multipart 'file')",
            "parameters": [{"name": "filename", "in": "query", "required": False, "schema": {"type": "string"}}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    },
                },
            },
            "responses": {
                "201": _json({"type": "object", "properties": {"upload": _ref("Upload")}}, "Stored"),
                **_errors(400, 401, 413),
            },
        },
        "get": {
            "operationId": "listUploads",
            "summary": "Your uploads, with the job that took each, and your upload quota",
            "responses": {"200": _json(_ref("UploadList"), "The uploads"), **_errors(401)},
        },
    },
    "/uploads/{upload_id}": {
        "parameters": [
            {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "delete": {
            "operationId": "deleteUpload",
            "summary": "Delete an upload no job took (one a job took goes with the job)",
            "responses": {"204": {"description": "Deleted"}, **_errors(401, 404, 409)},
        },
    },
    "/tokens": {
        "get": {
            "operationId": "listTokens",
            "summary": "Your API tokens (never their secrets), revoked and expired ones marked",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"tokens": {"type": "array", "items": _ref("Token")}}},
                    "The tokens",
                ),
                **_errors(401),
            },
        },
    },
    "/tokens/{token_id}": {
        "parameters": [
            {"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
        ],
        "delete": {
            "operationId": "revokeToken",
            "summary": "Revoke one of your tokens; browsers signed in with it are signed out",
            "responses": {"204": {"description": "Revoked"}, **_errors(400, 401, 404)},
        },
    },
    "/jobs": {
        "get": {
            "operationId": "listJobs",
            "summary": "Your jobs, newest first",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
            "responses": {"200": _json(_ref("JobList"), "The jobs"), **_errors(400, 401)},
        },
        "post": {
            "operationId": "createJob",
            "summary": "Submit a compression job; every input is checked before it is queued",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": _ref("JobFromFiles")},
                    "application/json": {"schema": _ref("JobFromUploads")},
                },
            },
            "responses": {
                "201": _json(_ref("Job"), "Queued"),
                **_errors(400, 401, 409, 413, 415, 422, 429, 503),
            },
        },
    },
    "/jobs/{job_id}": {
        "parameters": [_JOB_ID],
        "get": {
            "operationId": "getJob",
            "summary": "A job's status, stage, progress, ETA, metrics, error and artefacts",
            "responses": {"200": _json(_ref("Job"), "The job"), **_errors(401, 404)},
        },
        "delete": {
            "operationId": "deleteJob",
            "summary": "Delete a job with its inputs, checkpoints and artefacts (cancel a running job first)",
            "responses": {"204": {"description": "Deleted"}, **_errors(401, 404, 409)},
        },
    },
    "/jobs/{job_id}/cancel": {
        "parameters": [_JOB_ID],
        "post": {
            "operationId": "cancelJob",
            "summary": "Cancel a job: a queued one at once, a running one within seconds",
            "responses": {
                "200": _json(_ref("Job"), "Cancelled"),
                "202": _json(_ref("Job"), "Cancel requested; the worker stops within seconds"),
                **_errors(401, 404, 409),
            },
        },
    },
    "/jobs/{job_id}/events": {
        "parameters": [_JOB_ID],
        "get": {
            "operationId": "jobEvents",
            "summary": "Server-sent events (status, progress); ends with an 'end' event when the job is final",
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Resume after this event id",
                },
                {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {
                "200": {
                    "description": (
                        "Server-sent events: a 'retry:' hint first, then per event 'id:' (resume with Last-Event-ID), "
                        "'event:' (status, progress, cancel_requested, or end without an id) and 'data:' (JSON, "
                        "the schema of its kind), ': keep-alive' comments between; closes after the 'end' event or "
                        "after CONDENSE_SSE_MAX_S (reconnect with Last-Event-ID)"
                    ),
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string", "description": "A stream of events (see itemSchema)"},
                            "itemSchema": {
                                "type": "object",
                                "required": ["event", "data"],
                                "properties": {
                                    "id": {"type": "integer", "description": "absent on 'end'"},
                                    "event": {
                                        "type": "string",
                                        "enum": ["status", "progress", "cancel_requested", "end"],
                                    },
                                    "data": {
                                        "oneOf": [
                                            _ref("StatusEvent"),
                                            _ref("ProgressEvent"),
                                            _ref("CancelRequestedEvent"),
                                            _ref("EndEvent"),
                                        ]
                                    },
                                },
                            },
                            "x-events": {
                                "status": _ref("StatusEvent"),
                                "progress": _ref("ProgressEvent"),
                                "cancel_requested": _ref("CancelRequestedEvent"),
                                "end": _ref("EndEvent"),
                            },
                        }
                    },
                },
                **_errors(400, 401, 404, 429, 503),
            },
        },
    },
    "/jobs/{job_id}/artifacts/{name}": {
        "parameters": [_JOB_ID, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {
            "operationId": "getArtifact",
            "summary": "Download an artefact (student.onnx, report.json, report.html)",
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "302": {"description": "Redirect to a presigned URL (S3 blob storage), valid for 5 minutes"},
                **_errors(401, 404),
            },
        },
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Condense API",
        "version": "1",
        "description": (
            "Model compression as a service: submit a teacher model and labelled positives, get a verified ONNX "
            "student with a report. Authenticate with 'Authorization: Bearer <token>' (condense token create)."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token (cdn_...)"}},
        "schemas": _SCHEMAS,
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document."""
    return copy.deepcopy(_DOCUMENT)
