"""``POST /uploads``: one file stored for a later ``POST /jobs`` that names it."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from service.api import api, api_jobs, api_user
from service.api.params import refuse_repeated_parts
from service.errors import ServiceError


@api.post("/uploads")
def create_upload() -> Any:
    """Store one file for a later ``POST /jobs``: the raw body (``?filename=``) or a multipart ``file`` part."""
    jobs = api_jobs()
    if request.mimetype == "multipart/form-data":
        refuse_repeated_parts(("file",))
        api_jobs().quota_room(api_user(), "file", (request.content_length or 0) - 64 * 1024)
        part = request.files.get("file")
        if part is None:
            raise ServiceError.field(400, "file", "a multipart upload needs a 'file' part")
        info = jobs.store_upload(api_user(), part.stream, part.filename, field="file")
    else:
        info = jobs.store_upload(
            api_user(),
            request.stream,
            request.args.get("filename"),
            field="body",
            content_length=request.content_length,
        )
    return jsonify({"upload": info.as_dict()}), 201


@api.get("/uploads")
def list_uploads() -> Any:
    """The caller's uploads (oldest first, each with the job that took it) and their quota."""
    jobs, user = api_jobs(), api_user()
    uploads = jobs.list_uploads(user)
    return jsonify(
        {
            "uploads": uploads,
            "used_bytes": sum(int(item.get("size", 0)) for item in uploads),
            "quota_bytes": jobs.settings.upload_quota_bytes,
        }
    )


@api.delete("/uploads/<upload_id>")
def delete_upload(upload_id: str) -> Any:
    """Delete an upload no job took (409 if one did: delete the job)."""
    api_jobs().delete_upload(api_user(), upload_id)
    return Response(status=204)
