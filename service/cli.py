"""The ``condense`` command line.

Every subcommand reports bad input as one line on stderr and a non-zero exit status, never a traceback.
Heavy imports (torch, onnxruntime) happen inside the subcommands so ``condense --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.compress_cli import add_compress_command
from service.example_cli import add_example_command
from service.pool_cli import add_pool_commands

EXIT_USAGE = 2
EXIT_FAILED = 1


def _input_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers C,H,W, got {text!r}")
    return parts  # type: ignore[return-value]


def _cmd_students(args: argparse.Namespace) -> int:
    from compression.students import family_defaults, list_students, resolve_student

    defaults = {arch: family for family, arch in family_defaults().items()}
    rows = [resolve_student(name) for name in list_students(args.family)]
    if args.json:
        print(json.dumps([{"name": r.name, "family": r.family, "description": r.description} for r in rows]))
        return 0
    for info in rows:
        alias = f"  (default for '{defaults[info.name]}')" if info.name in defaults else ""
        print(f"{info.name:<16} {info.family:<7} {info.description}{alias}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from compression import create_student, profile
    from compression.students import Budget

    budget = None
    if args.budget_ratio is not None:
        reference = create_student(args.reference, num_classes=args.num_classes, input_shape=args.input_shape)
        budget = Budget.from_teacher(reference, args.input_shape, ratio=args.budget_ratio, metric=args.budget_metric)
    model = create_student(
        args.student,
        num_classes=args.num_classes,
        input_shape=args.input_shape,
        width=args.width,
        budget=budget,
    )
    # A fresh binary network amplifies float rounding through its sign() steps, so on random inputs its
    # top-1 is noise: the ONNX check is reported but not enforced for it (trained students are checked strictly).
    untrained_binary = getattr(model, "family", None) == "binary"
    result = profile(
        model,
        args.input_shape,
        onnx_path=args.onnx,
        atol=float("inf") if untrained_binary else 1e-4,
        min_top1_agreement=0.0 if untrained_binary else 1.0,
    )
    summary = {"student": args.student, "input_shape": list(args.input_shape), **result.as_dict()}
    summary.pop("layers")
    if args.onnx:
        summary["onnx"] = args.onnx
    print(json.dumps(summary, indent=2) if args.json else _format_profile(summary))
    return 0


def _verdict(check: dict) -> str:
    if check["min_top1_agreement"] == 0:
        return "reported, not enforced (untrained binary network)"
    return "passed" if check["passed"] else "FAILED"


def _format_profile(summary: dict) -> str:
    check = summary["verification"]
    lines = [f"{key:<16} {summary[key]:,}" for key in ("parameters", "macs", "multiplications", "additions")]
    lines += [f"{key:<16} {summary[key]:,}" for key in ("binary_ops", "weight_bytes", "onnx_bytes")]
    lines.append(
        f"{'onnx check':<16} {_verdict(check)}: max abs diff {check['max_abs_diff']:.2e}, "
        f"top-1 agreement {check['top1_agreement']:.1%} over {check['num_samples']} samples"
    )
    for size, stats in summary["latency"].items():
        lines.append(f"{'latency b' + size:<16} {stats['median_ms']:.2f} ms median (p90 {stats['p90_ms']:.2f} ms)")
    if "onnx" in summary:
        lines.append(f"{'onnx file':<16} {summary['onnx']}")
    return "\n".join(lines)


def _cmd_distill(args: argparse.Namespace) -> int:
    import signal

    from compression import Budget, create_student, deploy_, distill, load_teacher, profile
    from compression.distill import TransferSet, default_config, evaluate, infer_family
    from compression.metrics.graph_ops import teacher_macs
    from pu_mining.arrays import read_image_arrays
    from service.progress import ProgressBar

    teacher = load_teacher(args.teacher, input_shape=args.input_shape)
    train = read_image_arrays(args.train)
    val = read_image_arrays(args.val) if args.val else None
    reference = teacher_macs(teacher)
    if reference is None:
        raise ValueError("cannot count the teacher's MACs for --budget-ratio; give --width instead")
    budget = None if args.width is not None else Budget(reference, args.budget_ratio, "macs")
    shape = teacher.input_shape
    student = create_student(
        args.student, num_classes=teacher.num_classes, input_shape=shape, width=args.width, budget=budget
    )
    overrides = _config_overrides(args)
    config = default_config(infer_family(student)).replace(**overrides)
    bar = None if args.quiet else ProgressBar()
    interrupted = {"count": 0}

    def on_interrupt(signum: int, frame: object) -> None:  # first Ctrl-C: stop and keep the best student
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt

    train_set = TransferSet(_fit(train.images, shape), train.labels)  # adapted once, for training and the report
    val_set = None if val is None else TransferSet(_fit(val.images, shape), val.labels)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = distill(
            teacher,
            student,
            train_set,
            val_set,
            config,
            on_progress=bar,
            checkpoint_dir=args.checkpoint_dir,
            should_stop=lambda: interrupted["count"] > 0,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    check_set = val_set if val_set is not None else train_set  # the report says which one
    check_images = check_set.images
    evaluation = evaluate(result.student, teacher, check_images, check_set.labels)
    deploy_(result.student)
    binary = infer_family(result.student) == "binary"
    samples = [check_images[i : i + 64] for i in range(0, min(len(check_images), 256), 64)]
    # Trained logits can be large: the check is relative as well as absolute (binary: top-1 only, see profile).
    measured = profile(
        result.student,
        shape,
        onnx_path=args.out,
        atol=float("inf") if binary else 1e-4,
        rtol=1e-4,
        sample_inputs=samples,
    )
    summary = {
        "student": args.student,
        "family": infer_family(result.student),
        "teacher_macs": reference,
        "stopped_reason": result.stopped_reason,
        "epochs_done": max(record.epoch for record in result.history),
        "best_epoch": result.best_epoch,
        "wall_s": round(result.wall_s, 1),
        "evaluated_on": "val" if val is not None else "train",
        "student_accuracy": evaluation.student_accuracy,
        "teacher_accuracy": evaluation.teacher_accuracy,
        "agreement": evaluation.agreement,
        **{k: v for k, v in measured.as_dict().items() if k != "layers"},
    }
    if args.out:
        summary["onnx"] = str(args.out)
    print(json.dumps(summary, indent=2) if args.json else _format_distill(summary))
    return 0


def _config_overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {}
    if args.config:
        try:
            overrides.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {args.config}: not a readable JSON object ({error})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of DistillConfig fields")
    for field, value in (("epochs", args.epochs), ("seed", args.seed), ("batch_size", args.batch_size)):
        if value is not None:
            overrides[field] = value
    if args.time_budget is not None:
        overrides["time_budget_s"] = args.time_budget * 60.0
    return overrides


def _fit(images, shape: tuple[int, int, int]):
    """Images resized / channel-converted to the teacher's input shape (the student takes the same input)."""
    from compression.teachers import adapt_images

    return images if tuple(images.shape[1:]) == tuple(shape) else adapt_images(images, shape)


def _format_distill(summary: dict) -> str:
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    lines = [
        f"{'stopped':<18} {summary['stopped_reason']} after {summary['epochs_done']} epoch(s), "
        f"best epoch {summary['best_epoch']}, {summary['wall_s']} s",
        f"{'student accuracy':<18} {percent(summary['student_accuracy'])} ({summary['evaluated_on']} images)",
        f"{'teacher accuracy':<18} {percent(summary['teacher_accuracy'])}",
        f"{'agreement':<18} {percent(summary['agreement'])}",
        f"{'parameters':<18} {summary['parameters']:,}",
        f"{'MACs':<18} {summary['macs']:,} (teacher {summary['teacher_macs']:,})",
        f"{'multiplications':<18} {summary['multiplications']:,}",
        f"{'weight bytes':<18} {summary['weight_bytes']:,}",
    ]
    for size, stats in summary["latency"].items():
        lines.append(f"{'latency b' + size:<18} {stats['median_ms']:.2f} ms median")
    if "onnx" in summary:
        lines.append(f"{'onnx file':<18} {summary['onnx']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the service (issue 6)

EXIT_GATE = 3  # condense submit --wait: the job succeeded but its student broke --max-accuracy-drop


def _settings():
    from service.settings import Settings

    return Settings.from_env()


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.serve import serve

    overrides = {
        "CONDENSE_BIND": args.bind,
        "CONDENSE_WORKERS": None if args.workers is None else str(args.workers),
        "CONDENSE_WEB_WORKERS": None if args.web_workers is None else str(args.web_workers),
    }
    return serve({name: value for name, value in overrides.items() if value is not None})


def _cmd_worker(args: argparse.Namespace) -> int:
    from service.worker import run_worker

    return run_worker(_settings())


def _metadata():
    from storage import open_metadata_store

    return open_metadata_store(_settings().database_url)


def _cmd_user_add(args: argparse.Namespace) -> int:
    with _metadata() as metadata:
        user = metadata.create_user(args.name, "admin" if args.admin else "user", args.max_running)
    print(f"user {user.name} ({user.role}, at most {user.max_running_jobs} job(s) queued or running)")
    print(f"next: condense token create {user.name}", file=sys.stderr)
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    with _metadata() as metadata:
        token = metadata.create_token(args.user, args.label)
    print(token)
    print("store it now: it is not shown again (only its hash is kept)", file=sys.stderr)
    return 0


def _client(args: argparse.Namespace):
    from service.client import Client

    return Client(
        args.server or os.environ.get("CONDENSE_SERVER", ""), args.token or os.environ.get("CONDENSE_TOKEN", "")
    )


class _JobProgress:
    """Server-sent job events: status lines, and progress drawn by :class:`service.progress.JobProgressBar`."""

    def __init__(self, stream) -> None:
        from service.progress import JobProgressBar

        self.bar = JobProgressBar(stream=stream)

    def __call__(self, event) -> None:
        if event.kind == "status":
            status = event.data.get("status")
            message = event.data.get("error") or event.data.get("message") or ""
            self.bar.close()
            self.bar.stream.write(f"status   {status}{': ' + message if message else ''}\n")
            self.bar.stream.flush()
        elif event.kind == "progress":
            self.bar(event.data)

    def close(self) -> None:
        self.bar.close()


def _job_summary(job: dict) -> str:
    lines = [f"{'job':<18} {job['id']}", f"{'status':<18} {job['status']}"]
    if job.get("stage"):
        progress = job.get("progress")
        lines.append(f"{'stage':<18} {job['stage']}" + (f" ({progress:.0%})" if isinstance(progress, float) else ""))
    if job.get("error"):
        lines.append(f"{'error':<18} {job['error']}")
    for key, value in (job.get("metrics") or {}).items():
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"{key:<18} {shown}")
    for item in job.get("artifacts", []):
        lines.append(f"{'artefact':<18} {item['name']} ({item['size']:,} bytes)")
    return "\n".join(lines)


def _finish_job_output(args: argparse.Namespace, client, job: dict) -> int:
    from service.client import quality_gate

    saved = []
    if job["status"] == "succeeded" and args.out:
        saved = [str(path) for path in client.download_all(job, args.out)]
    allowed = None if args.max_accuracy_drop is None else args.max_accuracy_drop / 100.0  # points -> fraction
    gate = quality_gate(job, allowed)
    if args.json:
        print(json.dumps({"job": job, "downloaded": saved, "gate": {"passed": gate.passed, "reason": gate.reason}}))
    else:
        print(_job_summary(job))
        for path in saved:
            print(f"{'saved':<18} {path}")
        if gate.passed is not None:
            print(f"{'quality gate':<18} {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
    if job["status"] != "succeeded":
        return EXIT_FAILED
    return EXIT_GATE if gate.passed is False else 0


def _cmd_submit(args: argparse.Namespace) -> int:
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
        ("max_accuracy_drop", None if args.max_accuracy_drop is None else args.max_accuracy_drop / 100.0),
        ("input_shape", None if args.input_shape is None else list(args.input_shape)),
        ("pool", args.pool),
    ):
        if value is not None:
            options[name] = value
    if args.max_accuracy_drop is None and isinstance(options.get("max_accuracy_drop"), int | float):
        args.max_accuracy_drop = float(options["max_accuracy_drop"]) * 100.0  # the options' fraction, in points
    job = client.submit(args.teacher, args.positives, options)
    if not args.wait:
        print(json.dumps(job) if args.json else job["id"])
        return 0
    print(f"submitted job {job['id']}", file=sys.stderr)
    progress = None if args.quiet else _JobProgress(sys.stderr)
    try:
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


def _add_service_commands(commands) -> None:
    serve = commands.add_parser("serve", help="run the service: web API (gunicorn) and job workers on this machine")
    serve.add_argument("--bind", help="HOST:PORT to listen on (env CONDENSE_BIND, default 127.0.0.1:8000)")
    serve.add_argument("--workers", type=int, help="job worker processes (env CONDENSE_WORKERS, default 1)")
    serve.add_argument("--web-workers", type=int, help="gunicorn processes (env CONDENSE_WEB_WORKERS, default 2)")
    serve.set_defaults(run=_cmd_serve)

    worker = commands.add_parser("worker", help="run one job worker (for more machines; settings from the env)")
    worker.set_defaults(run=_cmd_worker)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage pools")
    add.add_argument("--max-running", type=int, default=2, help="jobs queued + running at once (default 2)")
    add.set_defaults(run=_cmd_user_add)

    token = commands.add_parser("token", help="manage API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="create an API token for a user (printed once)")
    create.add_argument("user")
    create.add_argument("--label", default="", help="what the token is for (e.g. 'CI')")
    create.set_defaults(run=_cmd_token_create)

    submit = commands.add_parser("submit", help="submit a compression job to a Condense server")
    _add_server_options(submit)
    submit.add_argument("--teacher", required=True, help="TorchScript (.pt), torch.export (.pt2) or ONNX file")
    submit.add_argument("--positives", required=True, help="folder / zip / tar with one folder per class, or .npz")
    submit.add_argument("--student", help="ghost, binary or adder (default ghost)")
    submit.add_argument("--budget-ratio", type=float, help="student MACs as a fraction of the teacher's")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--time-budget", type=float, metavar="MINUTES")
    submit.add_argument("--input-shape", type=_input_shape, metavar="C,H,W", help="the teacher's input, if not in it")
    submit.add_argument("--pool", help="unlabelled pool to mine (default demo)")
    submit.add_argument("--options", help="job options as JSON, or @FILE.json (flags win)")
    submit.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="quality gate: exit 3 if the student's accuracy is more than POINTS percentage points below the teacher's",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job, download its artefacts, print a summary")
    submit.add_argument("--out", default=".", help="where --wait saves the artefacts (default: here)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this")
    submit.add_argument("--quiet", action="store_true", help="no progress bar")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condense", description="Model compression: Ghost, binary and adder students."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    students = commands.add_parser("students", help="list the student architectures")
    students.add_argument("--family", choices=["plain", "ghost", "binary", "adder"])
    students.add_argument("--json", action="store_true", help="machine-readable output")
    students.set_defaults(run=_cmd_students)

    prof = commands.add_parser("profile", help="build a student, export and verify it in ONNX Runtime, profile it")
    prof.add_argument("student", help="architecture or family name (see 'condense students')")
    prof.add_argument("--num-classes", type=int, default=10)
    prof.add_argument("--input-shape", type=_input_shape, default=(3, 32, 32), metavar="C,H,W")
    prof.add_argument("--width", type=float, help="width multiplier (default 1.0)")
    prof.add_argument("--budget-ratio", type=float, help="size the student to this fraction of --reference")
    prof.add_argument("--budget-metric", choices=["macs", "params"], default="macs")
    prof.add_argument("--reference", default="resnet56", help="reference architecture for --budget-ratio")
    prof.add_argument("--onnx", help="also write the verified ONNX file here")
    prof.add_argument("--json", action="store_true", help="machine-readable output")
    prof.set_defaults(run=_cmd_profile)

    dist = commands.add_parser(
        "distill", help="distil a teacher into a student on images you have (robust KD), export it to ONNX"
    )
    dist.add_argument("--teacher", required=True, help="TorchScript (.pt), torch.export (.pt2) or ONNX file")
    dist.add_argument("--train", required=True, help=".npz with 'x' (images) and optional 'y' (labels, -1 unknown)")
    dist.add_argument("--val", help="held-out labelled .npz to pick the best epoch and report accuracy on")
    dist.add_argument("--student", default="ghost", help="family or architecture (see 'condense students')")
    dist.add_argument("--budget-ratio", type=float, default=0.25, help="student MACs as a fraction of the teacher's")
    dist.add_argument("--width", type=float, help="width multiplier instead of --budget-ratio")
    dist.add_argument("--input-shape", type=_input_shape, metavar="C,H,W", help="the teacher's input, if not in it")
    dist.add_argument("--epochs", type=int, help="schedule length (default: the family's, see docs)")
    dist.add_argument("--batch-size", type=int)
    dist.add_argument("--seed", type=int)
    dist.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop and keep the best student by then")
    dist.add_argument("--config", help="JSON file of DistillConfig fields (command-line options win)")
    dist.add_argument("--checkpoint-dir", help="resume from / checkpoint to this folder")
    dist.add_argument("--out", help="write the verified ONNX student here")
    dist.add_argument("--quiet", action="store_true", help="no progress bar")
    dist.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    dist.set_defaults(run=_cmd_distill)

    _add_service_commands(commands)
    add_pool_commands(commands)
    add_compress_command(commands)
    add_example_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP's default is to spin while waiting for work: on CPUs shared with other busy processes that makes torch
    # about 20x slower (measured on 2 busy cores: a Ghost student's training step took 4.7 s instead of 0.27 s).
    # Passive waiting costs little on an idle machine. Set before any torch import; an explicit value wins. Child
    # processes (``condense serve``'s gunicorn and workers) inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from service.client import ApiError

    try:
        return args.run(args)
    except ApiError as error:  # the server refused the request, or could not be reached
        print(f"condense {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE if 400 <= error.status < 500 else EXIT_FAILED
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"condense {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as error:  # e.g. a failed ONNX verification
        print(f"condense {args.command}: failed: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
