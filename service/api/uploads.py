"""``POST /uploads``: one file stored for a later ``POST /jobs`` that names it."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request

from service.api import api, api_jobs, api_user
from service.api.params import refuse_repeated_parts
from service.errors import ServiceError


@api.post("/uploads")
def create_upload() -> Any:
    """Store one file for a later ``POST /jobs``: the raw body (``?filename=``) or a multipart ``file`` part."""
    jobs = api_jobs()
    if request.mimetype == "multipart/form-data":
        refuse_repeated_parts(("file",))
        part = request.files.get("file")
        if part is None:
            raise ServiceError.field(400, "file", "a multipart upload needs a 'file' part")
        info = jobs.store_upload(api_user(), part.stream, part.filename, field="file")
    else:
        info = jobs.store_upload(api_user(), request.stream, request.args.get("filename"), field="body")
    return jsonify({"upload": info.as_dict()}), 201
