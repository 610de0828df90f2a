"""The pages' routes (see :mod:`service.web` for what each shows)."""

from __future__ import annotations

import logging
from typing import Any

from flask import flash, redirect, render_template, request, session, url_for

from service.context import SESSION_ID_KEY, session_id
from service.errors import ServiceError
from service.jobs.pool_ingest import is_pool_ingest, pool_ingest_name
from service.web import _safe_next, web, web_jobs, web_user
from service.web.forms import FIELD_LABELS, OPTION_FIELDS, options_from_form, render_form, values_from_options
from service.web.job_inputs import resolve_files, still_kept
from service.web.results import ARTIFACT_ORDER, last_event_id, list_figures, results_context
from storage import hash_token

logger = logging.getLogger(__name__)

_JOBS_LISTED = 100


@web.get("/")
def index() -> Any:
    """The jobs list (signed-out visitors are sent to sign in first)."""
    return redirect(url_for("web.jobs"))


@web.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """Sign in with an API token; a bad or revoked token is refused (401) with the reason."""
    next_url = _safe_next(request.values.get("next"))
    if request.method == "POST":
        token = request.form.get("token", "").strip()
        user = web_jobs().metadata.authenticate(token) if token else None
        if user is None:
            message = (
                "Paste an API token." if not token else "That API token is not valid (mistyped, revoked or unknown)."
            )
            return render_template("sign_in.html", error=message, next_url=next_url), 401
        metadata = web_jobs().metadata
        previous = session_id()
        if previous is not None:
            metadata.sessions.end(previous)
        session.clear()  # a fresh session: new CSRF token, nothing carried over from before signing in
        ttl_s = web_jobs().settings.session_ttl_s
        session[SESSION_ID_KEY] = metadata.sessions.create(user.name, ttl_s, token_hash=hash_token(token))
        logger.info("web: %s signed in", user.name)
        flash(f"Signed in as {user.name}.", "info")
        return redirect(next_url or url_for("web.jobs"), 303)
    return render_template("sign_in.html", error=None, next_url=next_url)


@web.post("/sign-out")
def sign_out() -> Any:
    """End the session server-side (a copy of the cookie stops working) and forget it."""
    current = session_id()
    if current is not None:
        web_jobs().metadata.sessions.end(current)
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("web.sign_in"), 303)


@web.get("/jobs")
def jobs() -> Any:
    """The user's jobs, newest first."""
    service = web_jobs()
    rows = []
    for job in service.list(web_user(), limit=_JOBS_LISTED):
        ingest = is_pool_ingest(job)
        teacher = job.spec.get("inputs", {}).get("images" if ingest else "teacher", {})
        downloads: list[str] = []
        figures: dict[str, str] = {}
        if job.status == "succeeded":
            artifacts = service.metadata.list_artifacts(job.id)
            names = {artifact.name for artifact in artifacts}
            downloads = [name for name in ARTIFACT_ORDER if name in names]
            figures = list_figures(service, job, artifacts)
        rows.append(
            {
                "id": job.id,
                "status": job.status,
                "stage": job.stage,
                "progress": job.progress,
                "created_at": job.created_at,
                "kind": "pool_ingest" if ingest else "compress",
                "student": f"pool {pool_ingest_name(job)}" if ingest else job.spec.get("options", {}).get("student"),
                "teacher": teacher.get("filename") if isinstance(teacher, dict) else None,
                "downloads": downloads,
                "figures": figures,
                "is_final": job.is_final,
            }
        )
    return render_template("jobs.html", rows=rows, limit=_JOBS_LISTED)


@web.route("/jobs/new", methods=["GET", "POST"])
def new_job() -> Any:
    """The new-job form; on POST the job is checked and queued like an API submission, or the form comes back."""
    service, user = web_jobs(), web_user()
    source_id = request.values.get("from", "").strip()
    source = service.get(user, source_id) if source_id else None  # "clone with changes": 404 if not the user's
    if source is not None and is_pool_ingest(source):
        raise ServiceError(409, "a pool ingest cannot be cloned into a compression job")
    if request.method == "POST":
        values = {name: str(request.form.get(name, "")) for name in OPTION_FIELDS}
        found: dict = {}
        try:
            options = options_from_form(request.form)
            found, problems = resolve_files(service, user, request.form, request.files, source)
            try:
                service.parse_options(options)
            except ServiceError as error:
                problems = [*error.fields, *problems]
                if not problems:
                    raise
            if problems:
                raise ServiceError(
                    422 if any(p["field"].startswith("options.") for p in problems) else 400,
                    "the job was not submitted",
                    problems,
                )
            job = service.submit(user, options, found["teacher"], found["positives"], found.get("test"))
        except ServiceError as error:
            return render_form(values, error, kept=still_kept(found, error), source=source), error.status
        flash("Job submitted: it is queued.", "info")
        return redirect(url_for("web.job_page", job_id=job.id), 303)
    if source is not None:
        return render_form(values_from_options(source.spec.get("options", {})), None, source=source)
    return render_form({"student": "auto", "budget_ratio": "0.25", "seed": "0"}, None)


@web.get("/jobs/<job_id>")
def job_page(job_id: str) -> Any:
    """One job: status, live updates while it is not final, cancel, artefacts, the report table."""
    service, user = web_jobs(), web_user()
    job = service.get(user, job_id)  # 404 for a missing or another user's job
    last_event = None
    if not job.is_final:
        last_event = last_event_id(service, job.id)  # before the state is read: later events are replayed
        job = service.get(user, job_id)
    view = service.view(job)
    context = results_context(service, job)
    events_url = None
    if last_event is not None and not job.is_final:
        events_url = url_for("api.job_events", job_id=job.id, after=last_event)
    return render_template("job.html", view=view, events_url=events_url, labels=FIELD_LABELS, **context)


@web.get("/jobs/<job_id>/results")
def job_results(job_id: str) -> Any:
    """The results part of the job page (error, artefacts, report table) alone."""
    service = web_jobs()
    job = service.get(web_user(), job_id)
    return render_template("_job_results.html", **results_context(service, job))


@web.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    """Cancel: a queued job at once, a running one within seconds; a finished one is left as it is."""
    try:
        job = web_jobs().cancel(web_user(), job_id)
    except ServiceError as error:
        if error.status != 409:
            raise
        flash(error.message, "error")
    else:
        if job.status == "cancelled":
            flash("Job cancelled.", "info")
        else:
            flash("Cancel requested: the job stops within seconds.", "info")
    return redirect(url_for("web.job_page", job_id=job_id), 303)
