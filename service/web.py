"""The web pages: sign in with an API token, list jobs, submit one through a form, watch it live, cancel it.

Server-rendered HTML (Jinja templates in ``service/templates``; one stylesheet and one small script in
``service/static``, served at ``/assets/``; nothing is loaded from anywhere else). The pages call the same
:class:`~service.jobs.JobService` methods as the JSON API (:mod:`service.api`), so validation, submission, user
isolation and cancelling follow one code path.

| route | what |
|---|---|
| ``GET /`` | the jobs list (the sign-in page when signed out) |
| ``GET, POST /sign-in`` | paste an API token (made by ``condense token create USER``) |
| ``POST /sign-out`` | forget it |
| ``GET /jobs`` | the user's own jobs: status, stage, progress bar, created time, links |
| ``GET, POST /jobs/new`` | the new-job form; refused fields are shown next to their inputs and nothing is queued |
| ``GET /jobs/<id>`` | one job, updated live from ``GET /api/v1/jobs/<id>/events``; cancel, artefacts, report table |
| ``GET /jobs/<id>/results`` | the results part of that page alone (the script swaps it in when the job ends) |
| ``POST /jobs/<id>/cancel`` | cancel the job |

**Signing in.** The service has API tokens only. The sign-in form checks the token
(:meth:`storage.MetadataStore.authenticate`) and keeps it in Flask's session: a cookie signed with
``CONDENSE_SECRET_KEY`` (:meth:`~service.settings.Settings.session_secret`), ``HttpOnly``, ``SameSite=Strict``, ending
with the browser session. Every request checks the token again, so revoking it signs the user out at once. The JSON
API accepts this cookie for its GET requests only (the page's ``EventSource`` and its download links cannot send an
``Authorization`` header); writes through the API still need the header, so the cookie alone never changes anything
there.

**CSRF.** Each session holds a random token (:func:`csrf_token`); every form carries it in the hidden field
``csrf_token``, and a POST to these pages without the matching value is refused with 400 before it does anything.
``SameSite=Strict`` is a second line.

**Live updates.** The job page opens an ``EventSource`` on the API's event stream, starting after the last event the
page already reflects, and updates status, stage, progress bar, time left and messages in place. When the stream
ends (the job is final) it fetches ``/jobs/<id>/results`` and swaps in the artefact links and the report table.
Without JavaScript everything works except the live part: reloading shows the current state.

A missing job and another user's job are the same 404 page; a signed-out visitor is sent to the sign-in page and,
after signing in, back to the page asked for (a local path only).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.app import service_context
from service.errors import ServiceError
from service.jobs import JobService, clean_filename
from service.options import STUDENT_FAMILIES
from service.progress import format_duration
from storage import BlobNotFoundError, Job, User

__all__ = [
    "CSRF_FIELD",
    "FIELD_LABELS",
    "FILE_FIELDS",
    "OPTION_FIELDS",
    "SESSION_TOKEN_KEY",
    "ComparisonRow",
    "comparison_rows",
    "csrf_token",
    "options_from_form",
    "session_token",
    "web",
]

logger = logging.getLogger(__name__)

SESSION_TOKEN_KEY = "condense_token"
"""The session key holding the signed-in user's API token (read by :mod:`service.api` for cookie auth)."""
CSRF_FIELD = "csrf_token"
"""The hidden form field carrying the session's CSRF token."""
FILE_FIELDS: tuple[str, ...] = ("teacher", "positives")
"""The file inputs of the new-job form (the same names as the API's multipart parts)."""
OPTION_FIELDS: tuple[str, ...] = (
    "student",
    "pool",
    "budget_ratio",
    "time_budget_min",
    "max_accuracy_drop",
    "seed",
    "input_shape",
    "epochs",
    "mean",
    "std",
    "holdout_fraction",
)
"""The form's option inputs, each named like its :class:`~service.options.JobOptions` field."""

FIELD_LABELS: dict[str, str] = {
    "teacher": "Teacher model",
    "positives": "Positives archive",
    "input_shape": "Input shape",
    "student": "Student family",
    "pool": "Pool",
    "budget_ratio": "Budget ratio",
    "time_budget_min": "Time budget (minutes)",
    "max_accuracy_drop": "Largest accuracy drop",
    "seed": "Seed",
    "epochs": "Epochs",
    "mean": "Mean",
    "std": "Standard deviation",
    "holdout_fraction": "Hold-out fraction",
}
"""The label of each form input (also used in the error summary)."""

_FAMILY_HINTS = {
    "ghost": "Ghost modules, cheap feature maps (GhostNet)",
    "binary": "1-bit weights and activations (BBG)",
    "adder": "additions instead of multiplications (AdderNet)",
}
_ADVANCED_FIELDS = ("epochs", "mean", "std", "holdout_fraction")
_CSRF_KEY = "condense_csrf"
_SESSION_COOKIE = "condense_session"
_NO_AUTH_ENDPOINTS = frozenset({"web.sign_in", "web.static"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FLOAT_FIELDS = frozenset({"budget_ratio", "time_budget_min", "max_accuracy_drop", "holdout_fraction"})
_INT_FIELDS = frozenset({"seed", "epochs"})
_LIST_FIELDS: dict[str, type] = {"input_shape": int, "mean": float, "std": float}
_LIST_SPLIT_RE = re.compile(r"[\s,;x×]+")
_JOBS_LISTED = 100
_EVENT_SCAN_BATCH = 1000
_REPORT_NAME = "report.json"
_REPORT_MAX_BYTES = 4 * 1024 * 1024
_ARTIFACT_ORDER = ("student.onnx", "report.html", "report.json")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

web = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


@web.record_once
def _configure(state: BlueprintSetupState) -> None:
    """Session cookie settings of the app the pages are registered on (after :class:`ServiceContext` is set up)."""
    app = state.app
    if "condense" not in app.extensions:
        raise RuntimeError("register the web blueprint on an app made by service.app.create_app")
    settings = service_context(app).settings
    app.secret_key = settings.session_secret()
    app.config.update(
        SESSION_COOKIE_NAME=_SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )


def _jobs() -> JobService:
    return service_context().jobs


def _user() -> User:
    return g.condense_web_user


# -------------------------------------------------------------------------------------------- session, CSRF


def session_token() -> str | None:
    """The API token of the signed-in browser session, or None (no session, or no secret key configured)."""
    token = session.get(SESSION_TOKEN_KEY)
    return token if isinstance(token, str) and token else None


def csrf_token() -> str:
    """This session's CSRF token, made on first use (the templates put it in every form)."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return token


def _check_csrf() -> None:
    expected = session.get(_CSRF_KEY)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not given or not hmac.compare_digest(expected, given):
        raise ServiceError(
            400, "The form had expired or did not come from this site. Reload the page and send it again."
        )


def _safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (no scheme, no host, not ``//``), else None: no open redirects."""
    if not target or len(target) > 2000 or not target.isprintable():
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    return target


@web.before_request
def _guard() -> Any:
    """CSRF check on every POST, then the session's token on every page but sign-in and the static files."""
    if request.endpoint == "web.static":
        return None
    if request.method not in _SAFE_METHODS:
        _check_csrf()
    if request.endpoint in _NO_AUTH_ENDPOINTS:
        return None
    token = session_token()
    user = _jobs().metadata.authenticate(token) if token else None
    if user is None:
        if token is not None:
            session.pop(SESSION_TOKEN_KEY, None)
            flash("Your API token is no longer valid (revoked?). Sign in again.", "error")
        wanted = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("web.sign_in", next=wanted), 303)
    g.condense_web_user = user
    return None


@web.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "web.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@web.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "csrf_field": CSRF_FIELD,
        "current_user": getattr(g, "condense_web_user", None),
    }


# ---------------------------------------------------------------------------------------------- formatting


@web.app_template_filter("condense_time")
def format_time(timestamp: float | None) -> str:
    """A Unix time as ``2025-01-31 14:05:09 UTC`` (empty for None)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@web.app_template_filter("condense_iso_time")
def format_iso_time(timestamp: float | None) -> str:
    """A Unix time as ISO 8601 (for ``<time datetime=...>``; empty for None)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(float(timestamp), tz=UTC).isoformat(timespec="seconds")


@web.app_template_filter("condense_percent")
def format_percent(fraction: float | None) -> str:
    """0.425 -> ``42.5 %`` (empty for None)."""
    if fraction is None:
        return ""
    return f"{float(fraction) * 100:.1f} %"


@web.app_template_filter("condense_duration")
def format_eta(seconds: float | None) -> str:
    """Seconds as ``1:15`` or ``1:02:05`` (empty for None)."""
    return "" if seconds is None else format_duration(seconds)


@web.app_template_filter("condense_bytes")
def format_bytes(size: int | None) -> str:
    """A byte count in binary units: ``2.0 KiB``, ``512 B``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# ------------------------------------------------------------------------------------------ the new-job form


def _parse_number(text: str, kind: type) -> int | float | str:
    """``text`` as a number of ``kind``; left as text when it is none, so :class:`JobOptions` reports the field."""
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        pass
    if kind is int:
        try:
            return float(text)  # "3.0" is accepted as 3 by JobOptions, "3.5" is reported as not an integer
        except ValueError:
            pass
    return text


def _parse_list(text: str, kind: type) -> list[int | float] | str:
    """``"1, 28, 28"``, ``"1x28x28"`` or ``"[0.5]"`` as a list of ``kind``; the text itself when not a list."""
    parts = [part for part in _LIST_SPLIT_RE.split(text.strip().strip("[]()")) if part]
    values = [_parse_number(part, kind) for part in parts]
    if not values or any(isinstance(value, str) for value in values):
        return text
    return values  # type: ignore[return-value]


def options_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """The API's ``options`` object from the new-job form's text inputs (empty inputs: the option's default).

    Numbers and lists (``input_shape`` as ``"1, 28, 28"`` or ``"1x28x28"``; ``mean``/``std`` as ``"0.5"`` or
    ``"0.5, 0.5, 0.5"``) are converted; text that does not convert is passed on unchanged, so that
    :meth:`JobOptions.from_dict` -- the API's own check -- reports the field with its reason.
    """
    if not isinstance(form, Mapping):
        raise TypeError(f"form must be a mapping of input names to strings, got {type(form).__name__}")
    options: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        raw = form.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise TypeError(f"form field {name!r} must be a string, got {type(raw).__name__}")
        text = raw.strip()
        if not text:
            continue
        if name in _FLOAT_FIELDS:
            options[name] = _parse_number(text, float)
        elif name in _INT_FIELDS:
            options[name] = _parse_number(text, int)
        elif name in _LIST_FIELDS:
            options[name] = _parse_list(text, _LIST_FIELDS[name])
        else:
            options[name] = text
    return options


def _submit(user: User, form: Mapping[str, Any], files: Mapping[str, FileStorage]) -> Job:
    """Validate and queue a job from the form, exactly as ``POST /api/v1/jobs`` does (ServiceError if refused)."""
    jobs = _jobs()
    options = options_from_form(form)
    problems: list[dict[str, str]] = []
    status = 400
    try:
        jobs.parse_options(options)  # cheap checks first: no file is copied for a form that will be refused
    except ServiceError as error:
        problems.extend(error.fields)
        status = error.status
    parts: dict[str, FileStorage] = {}
    for name in FILE_FIELDS:
        part = files.get(name)
        if part is None or not part.filename:
            problems.append({"field": name, "reason": "choose a file"})
        else:
            parts[name] = part
    if problems:
        raise ServiceError(status, "The job was not submitted: see the fields marked below.", problems)
    jobs.check_limit(user)
    limits = {"teacher": jobs.settings.max_teacher_bytes, "positives": jobs.settings.max_upload_bytes}
    with jobs.scratch() as scratch:
        saved = {
            name: jobs.save_stream(
                part.stream,
                scratch / name,
                limit=limits[name],
                field=name,
                filename=clean_filename(part.filename, name),
            )
            for name, part in parts.items()
        }
        return jobs.submit(user, options, saved["teacher"], saved["positives"])


def _field_errors(fields: Sequence[Mapping[str, str]]) -> tuple[dict[str, list[str]], list[str]]:
    """The API's ``fields`` list split into reasons per form input and the ones no input shows."""
    by_input: dict[str, list[str]] = {}
    general: list[str] = []
    inputs = set(OPTION_FIELDS) | set(FILE_FIELDS)
    for item in fields:
        name = str(item.get("field", ""))
        reason = str(item.get("reason", ""))
        short = name.removeprefix("options.")
        if short in inputs:
            by_input.setdefault(short, []).append(reason)
        else:
            general.append(f"{name}: {reason}" if name else reason)
    return by_input, general


def _pools() -> list[dict[str, Any]]:
    """The pools a job can mine (``PoolStore.list``), as ``{"name", "count"}``; empty when none can be listed."""
    try:
        from pu_mining.pool import PoolStore
    except ImportError:
        return []
    try:
        manifests = PoolStore(_jobs().blobs).list()
    except Exception as error:  # the form still works: the pool is typed in instead
        logger.warning("could not list the pools: %s", error)
        return []
    return [{"name": manifest.name, "count": manifest.count} for manifest in manifests]


def _render_form(values: Mapping[str, str], error: ServiceError | None) -> str:
    field_errors, general = _field_errors(error.fields if error is not None else [])
    advanced_open = any(field_errors.get(name) or values.get(name) for name in _ADVANCED_FIELDS)
    return render_template(
        "new_job.html",
        values=values,
        labels=FIELD_LABELS,
        families=STUDENT_FAMILIES,
        family_hints=_FAMILY_HINTS,
        pools=_pools(),
        error=error,
        field_errors=field_errors,
        general_errors=general,
        advanced_open=advanced_open,
    )


# ---------------------------------------------------------------------------------------- the report table


@dataclass(frozen=True)
class ComparisonRow:
    """One row of the before/after table: a measure, the teacher's and the student's value, and the change."""

    label: str
    teacher: str
    student: str
    change: str


_SIDES = {"teacher": ("teacher", "before"), "student": ("student", "after")}
_MEASURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("accuracy", "Accuracy", ("accuracy", "top1_accuracy", "acc")),
    ("parameters", "Parameters", ("parameters", "params", "num_parameters")),
    ("macs", "MACs", ("macs",)),
    ("latency", "Latency (batch 1, median)", ("latency_ms", "latency")),
)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _latency_ms(value: object) -> float | None:
    """Milliseconds from a number or a profile's ``{"1": {"median_ms": ...}, ...}`` (batch 1, else the first)."""
    number = _finite(value)
    if number is not None or not isinstance(value, Mapping):
        return number
    for key in ("median_ms", "mean_ms", "ms"):
        if key in value:
            return _finite(value[key])
    stats = value.get("1", value.get(1))  # type: ignore[call-overload]
    if stats is None and value:
        stats = next(iter(value.values()))
    return _latency_ms(stats) if isinstance(stats, Mapping) else None


def _candidates(sources: Sequence[Mapping[str, Any]], side: str, aliases: tuple[str, ...]) -> Iterator[object]:
    """The values a source gives for a measure of ``side``, in order (see :func:`comparison_rows` for the layouts)."""
    for source in sources:
        for nested_key in _SIDES[side]:
            nested = source.get(nested_key)
            if isinstance(nested, Mapping):
                for holder in (nested, nested.get("profile")):
                    if isinstance(holder, Mapping):
                        yield from (holder[alias] for alias in aliases if alias in holder)
        yield from (source[f"{side}_{alias}"] for alias in aliases if f"{side}_{alias}" in source)
        if side == "student":
            yield from (source[alias] for alias in aliases if alias in source)


def _format_measure(measure: str, value: float) -> str:
    if measure == "accuracy":
        return f"{value * 100:.2f} %"
    if measure == "latency":
        return f"{value:.3g} ms"
    return f"{round(value):,}"


def _change(measure: str, teacher: float | None, student: float | None) -> str:
    if teacher is None or student is None:
        return ""
    if measure == "accuracy":
        points = (student - teacher) * 100
        return f"{points:+.2f} points"
    if teacher <= 0:
        return ""
    return f"×{student / teacher:.3g}"


def comparison_rows(report: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None = None) -> list[ComparisonRow]:
    """The before/after table from a job's ``report.json`` (and its metrics as a fallback): only what is there.

    Each measure (accuracy, parameters, MACs, latency at batch 1) is looked up for the teacher and the student in
    these layouts, first match wins: a nested object (``report["teacher"]["accuracy"]``, also ``"before"`` /
    ``"after"`` and a nested ``"profile"``), a prefixed key (``teacher_accuracy``, ``student_macs``), and for the
    student the plain key (``parameters``, ``macs``, ``latency`` as in ``condense distill --json``). Latency is
    milliseconds or a profile's ``{"1": {"median_ms": ...}}``. Values that are not finite numbers are skipped (the
    next layout is tried); a measure with neither value gives no row.
    """
    sources = [source for source in (report, metrics) if source is not None]
    for source in sources:
        if not isinstance(source, Mapping):
            raise TypeError(f"report and metrics must be mappings, got {type(source).__name__}")
    rows = []
    for measure, label, aliases in _MEASURES:
        values: dict[str, float | None] = {}
        convert = _latency_ms if measure == "latency" else _finite
        for side in _SIDES:
            found = (convert(raw) for raw in _candidates(sources, side, aliases))
            values[side] = next((value for value in found if value is not None), None)
        teacher, student = values["teacher"], values["student"]
        if teacher is None and student is None:
            continue
        rows.append(
            ComparisonRow(
                label=label,
                teacher="—" if teacher is None else _format_measure(measure, teacher),
                student="—" if student is None else _format_measure(measure, student),
                change=_change(measure, teacher, student),
            )
        )
    return rows


def _read_report(jobs: JobService, job: Job, artifacts: Sequence[Any]) -> dict[str, Any] | None:
    """The job's ``report.json`` as a dict, or None (none, too big, unreadable: logged, the page goes on)."""
    for artifact in artifacts:
        if artifact.name != _REPORT_NAME:
            continue
        if artifact.size > _REPORT_MAX_BYTES:
            logger.warning("job %s: report.json is %d bytes; not shown on the page", job.id, artifact.size)
            return None
        try:
            with jobs.blobs.open_read(artifact.blob_key) as handle:
                data = json.loads(handle.read(_REPORT_MAX_BYTES + 1))
        except (BlobNotFoundError, OSError, ValueError) as error:
            logger.warning("job %s: cannot read report.json: %s", job.id, error)
            return None
        return data if isinstance(data, dict) else None
    return None


def _results_context(jobs: JobService, job: Job) -> dict[str, Any]:
    artifacts = jobs.metadata.list_artifacts(job.id)
    rank = {name: index for index, name in enumerate(_ARTIFACT_ORDER)}
    artifacts = sorted(artifacts, key=lambda a: (rank.get(a.name, len(rank)), a.name))
    report = _read_report(jobs, job, artifacts)
    return {
        "job": job,
        "artifacts": artifacts,
        "comparison": comparison_rows(report, job.metrics),
        "gate": _gate(report),
    }


def _gate(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The quality gate's verdict from ``report["gate"]`` (``passed``, ``reason``), when the job had one."""
    gate = report.get("gate") if report is not None else None
    if not isinstance(gate, Mapping) or not isinstance(gate.get("passed"), bool):
        return None
    reason = gate.get("reason")
    return {"passed": gate["passed"], "reason": reason if isinstance(reason, str) else ""}


def _last_event_id(jobs: JobService, job_id: str) -> int:
    """The id of the job's latest event (the page's live stream starts after it); 0 when there is none."""
    last = 0
    while True:
        batch = jobs.metadata.events_since(job_id, last, _EVENT_SCAN_BATCH)
        if batch:
            last = batch[-1].id
        if len(batch) < _EVENT_SCAN_BATCH:
            return last


# ------------------------------------------------------------------------------------------------- views


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
        user = _jobs().metadata.authenticate(token) if token else None
        if user is None:
            message = (
                "Paste an API token." if not token else "That API token is not valid (mistyped, revoked or unknown)."
            )
            return render_template("sign_in.html", error=message, next_url=next_url), 401
        session.clear()  # a fresh session: new CSRF token, nothing carried over from before signing in
        session[SESSION_TOKEN_KEY] = token
        logger.info("web: %s signed in", user.name)
        flash(f"Signed in as {user.name}.", "info")
        return redirect(next_url or url_for("web.jobs"), 303)
    return render_template("sign_in.html", error=None, next_url=next_url)


@web.post("/sign-out")
def sign_out() -> Any:
    """Forget the session's token."""
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("web.sign_in"), 303)


@web.get("/jobs")
def jobs() -> Any:
    """The user's jobs, newest first."""
    service = _jobs()
    rows = []
    for job in service.list(_user(), limit=_JOBS_LISTED):
        teacher = job.spec.get("inputs", {}).get("teacher", {})
        downloads: list[str] = []
        if job.status == "succeeded":
            names = {artifact.name for artifact in service.metadata.list_artifacts(job.id)}
            downloads = [name for name in _ARTIFACT_ORDER if name in names]
        rows.append(
            {
                "id": job.id,
                "status": job.status,
                "stage": job.stage,
                "progress": job.progress,
                "created_at": job.created_at,
                "student": job.spec.get("options", {}).get("student"),
                "teacher": teacher.get("filename") if isinstance(teacher, dict) else None,
                "downloads": downloads,
            }
        )
    return render_template("jobs.html", rows=rows, limit=_JOBS_LISTED)


@web.route("/jobs/new", methods=["GET", "POST"])
def new_job() -> Any:
    """The new-job form; on POST the job is checked and queued like an API submission, or the form comes back."""
    if request.method == "POST":
        values = {name: str(request.form.get(name, "")) for name in OPTION_FIELDS}
        try:
            job = _submit(_user(), request.form, request.files)
        except ServiceError as error:
            return _render_form(values, error), error.status
        flash("Job submitted: it is queued.", "info")
        return redirect(url_for("web.job_page", job_id=job.id), 303)
    return _render_form({"student": "ghost", "budget_ratio": "0.25", "seed": "0"}, None)


@web.get("/jobs/<job_id>")
def job_page(job_id: str) -> Any:
    """One job: status, live updates while it is not final, cancel, artefacts, the report table."""
    service, user = _jobs(), _user()
    job = service.get(user, job_id)  # 404 for a missing or another user's job
    last_event = None
    if not job.is_final:
        last_event = _last_event_id(service, job.id)  # before the state is read: later events are replayed
        job = service.get(user, job_id)
    view = service.view(job)
    context = _results_context(service, job)
    events_url = None
    if last_event is not None and not job.is_final:
        events_url = url_for("api.job_events", job_id=job.id, after=last_event)
    return render_template("job.html", view=view, events_url=events_url, **context)


@web.get("/jobs/<job_id>/results")
def job_results(job_id: str) -> Any:
    """The results part of the job page (error, artefacts, report table) alone."""
    service = _jobs()
    job = service.get(_user(), job_id)
    return render_template("_job_results.html", **_results_context(service, job))


@web.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    """Cancel: a queued job at once, a running one within seconds; a finished one is left as it is."""
    try:
        job = _jobs().cancel(_user(), job_id)
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


# -------------------------------------------------------------------------------------------------- errors


def _error_page(status: int, message: str) -> Any:
    return render_template("error.html", status=status, message=message), status


@web.errorhandler(ServiceError)
def _service_error(error: ServiceError) -> Any:
    return _error_page(error.status, error.message)


@web.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> Any:
    limit = service_context().settings.max_request_bytes
    return _error_page(413, f"The upload is over the {limit:,}-byte limit.")


@web.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    return _error_page(error.code or 500, error.description or error.name)


@web.errorhandler(Exception)
def _unexpected(error: Exception) -> Any:
    logger.exception("web: unhandled error on %s %s", request.method, request.path)
    return _error_page(500, f"Internal server error ({type(error).__name__}).")
