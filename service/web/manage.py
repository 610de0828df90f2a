"""Pages beyond one job's life: delete, re-run, the full report with a way back, the pools, the API tokens.

| route | what |
|---|---|
| ``POST /jobs/<id>/delete`` | delete a finished (or queued) job with its files |
| ``POST /jobs/<id>/rerun`` | the same inputs and options as a new job (the files are copied) |
| ``GET /jobs/<id>/report`` | ``report.html`` with a link back to the job page (no script in it runs) |
| ``GET /pools`` | the pools a job can mine: images, version, index, size, last change |
| ``POST /pools`` | admins: queue a job adding an archive's images to a pool (created when new) |
| ``GET, POST /tokens`` | the user's API tokens: create one (shown once), list them |
| ``POST /tokens/<id>/revoke`` | revoke one of the user's tokens |

"Clone with changes" is the new-job form opened with ``?from=<id>`` (:func:`service.web.views.new_job`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from markupsafe import escape

from service.errors import ServiceError
from service.jobs.pool_ingest import IMAGES_FIELD, is_pool_ingest, submit_pool_ingest
from service.web import web, web_jobs, web_user
from service.web.job_inputs import copy_job_input
from storage import BlobNotFoundError

logger = logging.getLogger(__name__)

_REPORT_MAX_BYTES = 64 * 1024 * 1024
_BODY_RE = re.compile(rb"<body[^>]*>", re.IGNORECASE)
_LABEL_MAX = 200
_REPORT_CSP = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@web.post("/jobs/<job_id>/delete")
def delete_job(job_id: str) -> Any:
    """Delete the job (409 while it runs: the page says to cancel it first)."""
    try:
        web_jobs().delete(web_user(), job_id)
    except ServiceError as error:
        if error.status != 409:
            raise
        flash(error.message, "error")
        return redirect(url_for("web.job_page", job_id=job_id), 303)
    flash(f"Job {job_id[:8]} deleted.", "info")
    return redirect(url_for("web.jobs"), 303)


@web.post("/jobs/<job_id>/rerun")
def rerun_job(job_id: str) -> Any:
    """Submit the job's inputs and options again as a new job."""
    service, user = web_jobs(), web_user()
    job = service.get(user, job_id)
    if is_pool_ingest(job):
        raise ServiceError(409, "a pool ingest is not re-run; add the images again from the pools page")
    try:
        teacher = copy_job_input(service, user, job, "teacher")
        positives = copy_job_input(service, user, job, "positives")
    except BlobNotFoundError:
        raise ServiceError(409, f"the files of job {job_id[:8]} are gone; submit a new job instead") from None
    new = service.submit(user, job.spec.get("options", {}), teacher, positives)
    flash(f"Re-run of job {job_id[:8]} submitted: it is queued.", "info")
    return redirect(url_for("web.job_page", job_id=new.id), 303)


@web.get("/jobs/<job_id>/report")
def job_report(job_id: str) -> Any:
    """``report.html`` with a back link to the job page on top; its scripts never run (``_REPORT_CSP``)."""
    service = web_jobs()
    artifact = service.artifact(web_user(), job_id, "report.html")
    if artifact.size > _REPORT_MAX_BYTES:
        return redirect(url_for("api.get_artifact", job_id=job_id, name="report.html"))
    try:
        with service.blobs.open_read(artifact.blob_key) as handle:
            html = handle.read(_REPORT_MAX_BYTES)
    except BlobNotFoundError:
        raise ServiceError(404, "the file of report.html is missing") from None
    back = (
        '<nav style="font:15px system-ui,sans-serif;padding:8px 12px;border-bottom:1px solid #d0d7de">'
        f'<a id="back-to-job" href="{escape(url_for("web.job_page", job_id=job_id))}">&larr; Back to job '
        f"{escape(job_id[:8])}</a></nav>"
    ).encode()
    match = _BODY_RE.search(html)
    html = html[: match.end()] + back + html[match.end() :] if match else back + html
    response = Response(html, mimetype="text/html")
    # Generated from user input: no script of any kind runs, no form posts, nothing loads from anywhere (its styles
    # and charts are inline). Not a sandbox: that would make the back link a cross-site request without the
    # session cookie (SameSite=Strict), i.e. a sign-in page instead of the job.
    response.headers["Content-Security-Policy"] = _REPORT_CSP
    return response


_INGEST_FIELDS = ("name", "images", "image_size", "channels")
_INGEST_JOBS_LISTED = 10


def _pools_page(values: dict[str, str] | None = None, error: ServiceError | None = None, kept: Any = None) -> Any:
    from pu_mining.pool import PoolStore

    user = web_user()
    service = web_jobs()
    try:
        manifests = PoolStore(service.blobs).list()
        problem = None
    except Exception as failure:  # the page still renders, saying why the list is empty
        logger.warning("could not list the pools: %s", failure)
        manifests, problem = [], "The pools cannot be listed right now."
    ingests = []
    if user.is_admin:
        ingests = [job for job in service.list(user, limit=100) if is_pool_ingest(job)][:_INGEST_JOBS_LISTED]
    field_errors: dict[str, list[str]] = {}
    general: list[str] = []
    if error is not None:
        for item in error.fields:
            name = str(item.get("field", "")).removesuffix("_upload")
            (field_errors.setdefault(name, []) if name in _INGEST_FIELDS else general).append(str(item["reason"]))
        if not error.fields:
            general.append(error.message)
    page = render_template(
        "pools.html",
        pools=manifests,
        problem=problem,
        ingests=ingests,
        values=values or {},
        field_errors=field_errors,
        general_errors=general,
        kept=kept,
    )
    return page, error.status if error is not None else 200


@web.get("/pools")
def pools() -> Any:
    """The pools a job can mine; for admins also the form adding images to a pool, and their recent ingests."""
    return _pools_page()


@web.post("/pools")
def ingest_pool() -> Any:
    """Queue a job adding an archive's images to a pool (admins; :mod:`service.jobs.pool_ingest`)."""
    service, user = web_jobs(), web_user()
    if not user.is_admin:
        raise ServiceError(403, "adding images to a pool needs the admin role")
    values = {name: str(request.form.get(name, "")).strip() for name in ("name", "image_size", "channels")}
    kept = None
    try:
        part = request.files.get(IMAGES_FIELD)
        kept_id = str(request.form.get(IMAGES_FIELD + "_upload") or "").strip()
        if part is not None and part.filename:
            kept = service.store_upload(user, part.stream, part.filename, field=IMAGES_FIELD)
        elif kept_id:
            kept = service.get_upload(user, kept_id, field=IMAGES_FIELD)
        else:
            raise ServiceError.field(400, IMAGES_FIELD, "choose an archive of images")
        job = submit_pool_ingest(
            service, user, values["name"], kept, image_size=values["image_size"], channels=values["channels"]
        )
    except ServiceError as error:
        blamed = any(str(item.get("field", "")).startswith(IMAGES_FIELD) for item in error.fields)
        return _pools_page(values, error, kept=None if blamed else kept)
    flash(f"Adding the images of {kept.filename} to pool {values['name']}: the job is queued.", "info")
    return redirect(url_for("web.job_page", job_id=job.id), 303)


def _tokens_page(new_token: str | None = None, label: str = "", status: int = 200, error: str = "") -> Any:
    user = web_user()
    tokens = web_jobs().metadata.list_tokens(user.name)
    page = render_template("tokens.html", tokens=tokens, new_token=new_token, label=label, error=error)
    return page, status


@web.route("/tokens", methods=["GET", "POST"])
def tokens() -> Any:
    """The user's API tokens; POST creates one and shows it once (never stored in the session)."""
    if request.method == "GET":
        return _tokens_page()
    label = request.form.get("label", "").strip()
    if len(label) > _LABEL_MAX:
        return _tokens_page(status=400, error=f"The label is over {_LABEL_MAX} characters.")
    token = web_jobs().metadata.create_token(web_user().name, label)
    logger.info("web: %s created an API token", web_user().name)
    return _tokens_page(new_token=token, label=label)


@web.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> Any:
    """Revoke one of the user's own tokens (another user's id changes nothing)."""
    user = web_user()
    if web_jobs().metadata.revoke_token(token_id, user_name=user.name):
        flash("Token revoked: it no longer works.", "info")
    else:
        flash("No such active token.", "error")
    return redirect(url_for("web.tokens"), 303)
