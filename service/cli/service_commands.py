"""``condense serve | worker | user | token | submit | status | download | cancel``: run and use the service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli.models import parse_input_shape
from service.cli.option_flags import add_student_option_flags, student_option_values
from service.cli.token_commands import add_token_commands
from service.options import STUDENT_FAMILIES

if TYPE_CHECKING:
    from storage import User

__all__ = ["EXIT_FAILED", "EXIT_GATE", "EXIT_GATE_UNDECIDED", "add_service_commands"]

EXIT_FAILED = 1
EXIT_GATE = 3  # condense submit --wait: the job succeeded but its student broke --max-accuracy-drop
EXIT_GATE_UNDECIDED = 4  # condense submit --wait: too few evaluation images to decide the gate


def _settings():
    from service.settings import Settings

    return Settings.from_env()


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.cli.serve import serve

    overrides = {
        "CONDENSE_BIND": args.bind,
        "CONDENSE_WORKERS": None if args.workers is None else str(args.workers),
        "CONDENSE_WEB_WORKERS": None if args.web_workers is None else str(args.web_workers),
    }
    return serve({name: value for name, value in overrides.items() if value is not None})


def _cmd_worker(args: argparse.Namespace) -> int:
    if args.check_heartbeat is not None:
        return _check_heartbeat(args.check_heartbeat)
    from service.jobs.worker import run_worker

    return run_worker(_settings())


def _check_heartbeat(max_age_s: float) -> int:
    """``condense worker --check-heartbeat MAX_AGE_S``: exit 0 when the worker's heartbeat file is fresh, else 1."""
    from service.jobs.heartbeat import check_heartbeat

    path = _settings().worker_heartbeat_file
    if path is None:
        raise ValueError("--check-heartbeat reads the file CONDENSE_WORKER_HEARTBEAT_FILE names, and it is not set")
    alive, message = check_heartbeat(path, max_age_s)
    print(f"condense worker: {message}", file=sys.stdout if alive else sys.stderr)
    return 0 if alive else EXIT_FAILED


def _metadata():
    from storage import open_metadata_store

    return open_metadata_store(_settings().database_url)


def _cmd_user_add(args: argparse.Namespace) -> int:
    with _metadata() as metadata:
        try:
            user = metadata.create_user(args.name, "admin" if args.admin else "user", args.max_running)
        except ValueError:
            existing = metadata.get_user(args.name) if args.if_missing else None
            if existing is None:  # a bad name or limit, or the user exists without --if-missing
                raise
            print(f"user {existing.name} exists; nothing to do ({_user_line(existing)})")
            return 0
    print(f"user {user.name} ({_user_line(user)})")
    print(f"next: condense token create {user.name}", file=sys.stderr)
    return 0


def _user_line(user: User) -> str:
    return f"{user.role}, at most {user.max_running_jobs} job(s) queued or running"


def _client(args: argparse.Namespace):
    from service.cli.client import Client

    return Client(
        args.server or os.environ.get("CONDENSE_SERVER", ""), args.token or os.environ.get("CONDENSE_TOKEN", "")
    )


_SUMMARY_KEYS = frozenset(
    {"student", "evaluated_on", "images", "teacher_accuracy", "student_accuracy", "agreement", "accuracy_drop"}
)


def _figure_lines(metrics: dict) -> list[str]:
    """The job's accuracy figures with counts and intervals (none for a job that has not reported yet)."""
    from service.pipeline.figures import summary_lines
    from service.pipeline.report import Summary

    try:
        summary = Summary.from_dict(metrics)
    except (KeyError, TypeError, ValueError, AttributeError):
        return []
    return [line for line in summary_lines(summary, 18) if not line.startswith("quality gate")]


def _job_summary(job: dict) -> str:
    lines = [f"{'job':<18} {job['id']}", f"{'status':<18} {job['status']}"]
    if job.get("stage"):
        progress = job.get("progress")
        lines.append(f"{'stage':<18} {job['stage']}" + (f" ({progress:.0%})" if isinstance(progress, float) else ""))
    if job.get("error"):
        lines.append(f"{'error':<18} {job['error']}")
    metrics = job.get("metrics") or {}
    figures = _figure_lines(metrics)
    lines += figures
    for key, value in metrics.items():
        if figures and key in _SUMMARY_KEYS:
            continue
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"{key:<18} {shown}")
    for item in job.get("artifacts", []):
        lines.append(f"{'artefact':<18} {item['name']} ({item['size']:,} bytes)")
    return "\n".join(lines)


def _finish_job_output(args: argparse.Namespace, client, job: dict) -> int:
    from service.cli.client import quality_gate

    saved = []
    if job["status"] == "succeeded" and args.out:
        saved = [str(path) for path in client.download_all(job, args.out)]
    gate = quality_gate(job)
    junit_path = getattr(args, "junit_xml", None)
    if junit_path:
        from service.cli.junit import write_junit_xml

        elapsed = (job.get("finished_at") or 0) - (job.get("created_at") or 0)
        write_junit_xml(junit_path, job, gate.passed, gate.reason, max(float(elapsed), 0.0))
    summary_path = getattr(args, "summary_md", None)
    if summary_path:
        from service.cli.ci_summary import append_summary

        append_summary(summary_path, job, args.out, (gate.passed, gate.reason))
    if args.json:
        verdict = {"outcome": gate.outcome, "passed": gate.passed, "reason": gate.reason}
        print(json.dumps({"job": job, "downloaded": saved, "gate": verdict}))
    else:
        print(_job_summary(job))
        for path in saved:
            print(f"{'saved':<18} {path}")
        if gate.outcome is not None:
            print(f"{'quality gate':<18} {gate.verdict}: {gate.reason}")
    if job["status"] != "succeeded":
        return EXIT_FAILED
    return {"failed": EXIT_GATE, "undecided": EXIT_GATE_UNDECIDED}.get(gate.outcome or "", 0)


def _cmd_submit(args: argparse.Namespace) -> int:
    from service.cli.job_progress import JobProgressBar

    client = _client(args)
    options: dict = {}
    if args.options:
        text = Path(args.options[1:]).read_text() if args.options.startswith("@") else args.options
        try:
            options = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--options: not valid JSON ({error})") from None
        if not isinstance(options, dict):
            raise ValueError("--options must be a JSON object of job options")
    for name, value in (
        ("student", args.student),
        ("budget_ratio", args.budget_ratio),
        ("epochs", args.epochs),
        ("time_budget_min", args.time_budget),
        ("max_accuracy_drop", args.max_accuracy_drop),
        ("input_shape", None if args.input_shape is None else list(args.input_shape)),
        ("pool", args.pool),
    ):
        if value is not None:
            options[name] = value
    options.update(student_option_values(args))
    if (args.junit_xml or args.summary_md) and not args.wait:
        raise ValueError("--junit-xml and --summary-md need --wait (they describe the finished job)")
    shown = not args.quiet and (args.wait or sys.stderr.isatty())
    progress = JobProgressBar(sys.stderr) if shown else None
    try:
        if progress is not None and args.positives is not None and Path(args.positives).is_dir():
            progress.preparing(f"zipping the positives folder {Path(args.positives).name}/")
        job = client.submit(
            args.teacher,
            args.positives,
            options,
            test=args.test,
            on_upload=None if progress is None else progress.upload,
        )
        if not args.wait:
            if progress is not None:
                progress.close()
            print(json.dumps(job) if args.json else job["id"])
            return 0
        if progress is not None:
            progress.submitted(job)
        else:
            print(f"submitted job {job['id']}", file=sys.stderr)
        job = client.wait(job["id"], progress, timeout_s=args.timeout)
    finally:
        if progress is not None:
            progress.close()
    return _finish_job_output(args, client, job)


def _cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.job is None:
        jobs = client.jobs()
        if args.json:
            print(json.dumps(jobs))
        for job in [] if args.json else jobs:
            progress = job.get("progress")
            shown = f"{progress:.0%}" if isinstance(progress, float) else ""
            print(f"{job['id']}  {job['status']:<10} {job.get('stage') or '':<24} {shown}")
        return 0
    job = client.job(args.job)
    print(json.dumps(job) if args.json else _job_summary(job))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.job(args.job)
    if not job.get("artifacts"):
        raise RuntimeError(f"job {args.job} has no artefacts (status {job['status']})")
    items = [item for item in job["artifacts"] if args.name is None or item["name"] in args.name]
    if args.name and len(items) != len(set(args.name)):
        missing = sorted(set(args.name) - {item["name"] for item in items})
        raise ValueError(f"job {args.job} has no artefact(s) {', '.join(missing)}")
    for item in items:
        print(client.download(job["id"], item["name"], Path(args.out) / item["name"], item.get("sha256")))
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job)
    print(
        json.dumps(job)
        if args.json
        else f"{job['id']}: {'cancelled' if job['status'] == 'cancelled' else 'cancel requested'}"
    )
    return 0


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="the service's URL, e.g. http://127.0.0.1:8000 (env CONDENSE_SERVER)")
    parser.add_argument("--token", help="your API token (env CONDENSE_TOKEN)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_service_commands(commands: argparse._SubParsersAction) -> None:
    """Add the service's commands to the ``condense`` parser."""
    serve = commands.add_parser("serve", help="run the service: web API (gunicorn) and job workers on this machine")
    serve.add_argument("--bind", help="HOST:PORT to listen on (env CONDENSE_BIND, default 127.0.0.1:8000)")
    serve.add_argument("--workers", type=int, help="job worker processes (env CONDENSE_WORKERS, default 1)")
    serve.add_argument("--web-workers", type=int, help="gunicorn processes (env CONDENSE_WEB_WORKERS, default 2)")
    serve.set_defaults(run=_cmd_serve)

    worker = commands.add_parser("worker", help="run one job worker (for more machines; settings from the env)")
    worker.add_argument(
        "--check-heartbeat",
        type=float,
        metavar="MAX_AGE_S",
        help="do not run a worker: exit 0 if the worker's CONDENSE_WORKER_HEARTBEAT_FILE was touched within "
        "MAX_AGE_S seconds, else 1 (a liveness probe)",
    )
    worker.set_defaults(run=_cmd_worker)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage pools")
    add.add_argument("--max-running", type=int, default=2, help="jobs queued + running at once (default 2)")
    add.add_argument(
        "--if-missing",
        action="store_true",
        help="when the user exists, change nothing and exit 0 (for set-up scripts that run again)",
    )
    add.set_defaults(run=_cmd_user_add)

    add_token_commands(commands)

    submit = commands.add_parser("submit", help="submit a compression job to a Condense server")
    _add_server_options(submit)
    submit.add_argument("--teacher", required=True, help="TorchScript (.pt), torch.export (.pt2) or ONNX file")
    submit.add_argument(
        "--positives",
        help="folder / zip / tar with one folder per class, or .npz; leave out for the no-labels mode (DFND selection)",
    )
    submit.add_argument(
        "--student", choices=STUDENT_FAMILIES, help="student family (default auto: sized by measured latency)"
    )
    submit.add_argument("--budget-ratio", type=float, help="student MACs as a fraction of the teacher's")
    add_student_option_flags(submit)
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--time-budget", type=float, metavar="MINUTES")
    submit.add_argument(
        "--input-shape", type=parse_input_shape, metavar="C,H,W", help="the teacher's input, if not in it"
    )
    submit.add_argument("--pool", help="unlabelled pool to mine (default demo)")
    submit.add_argument("--options", help="job options as JSON, or @FILE.json (flags win)")
    submit.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="quality gate, 0-100 points (with --wait): exit 3 if the student is further below the teacher, 4 if "
        "too few images to decide",
    )
    submit.add_argument(
        "--test", metavar="PATH", help="optional labelled test set (positives' format and classes): the headline"
    )
    submit.add_argument("--wait", action="store_true", help="follow the job, download its artefacts, print a summary")
    submit.add_argument("--out", default=".", help="where --wait saves the artefacts (default: here)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this")
    submit.add_argument("--quiet", action="store_true", help="no progress bar")
    submit.add_argument(
        "--junit-xml", metavar="PATH", help="with --wait: write the job and its quality gate as JUnit XML (for CI)"
    )
    submit.add_argument(
        "--summary-md", metavar="PATH", help="with --wait: append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)"
    )
    submit.set_defaults(run=_cmd_submit)

    status = commands.add_parser("status", help="show a job (or list your jobs)")
    _add_server_options(status)
    status.add_argument("job", nargs="?")
    status.set_defaults(run=_cmd_status)

    download = commands.add_parser("download", help="download a job's artefacts")
    _add_server_options(download)
    download.add_argument("job")
    download.add_argument("--out", default=".", help="folder to save into (default: here)")
    download.add_argument("--name", action="append", help="only this artefact (repeatable)")
    download.set_defaults(run=_cmd_download)

    cancel = commands.add_parser("cancel", help="cancel a job")
    _add_server_options(cancel)
    cancel.add_argument("job")
    cancel.set_defaults(run=_cmd_cancel)
