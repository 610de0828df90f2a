"""The deployment files, checked offline: Kubernetes manifests against the API schemas (kubernetes-validate) and the
restricted Pod Security Standard, the compose topology, the image's entry point and health check.

scripts/container-smoke.sh builds and runs the image for real; these checks take seconds and need no container engine.
"""

from __future__ import annotations

import os
import runpy
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONDENSE_IMAGE = "condense"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")


def _manifests(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(folder.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    if resource["kind"] == "Pod":
        return resource["spec"]
    if resource["kind"] in POD_KINDS:
        return resource["spec"]["template"]["spec"]
    return None


def _pods(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for path, resource in _manifests(folder):
        spec = _pod_spec(resource)
        if spec is not None:
            pods.append((f"{path.relative_to(ROOT)}:{resource['kind']}/{resource['metadata']['name']}", spec))
    return pods


def _condense_pods() -> list[tuple[str, dict[str, Any]]]:
    return [(name, spec) for name, spec in _pods(K8S) if _image_name(spec["containers"][0]["image"]) == CONDENSE_IMAGE]


def _image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def _graceful_timeout() -> float:
    return float(runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))["graceful_timeout"])


# ------------------------------------------------------------------------------- the restricted Pod Security Standard

_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in pod spec ``pod`` breaks the "restricted" profile of the Kubernetes Pod Security Standards (baseline
    rules included), one line per problem; empty when the API server of a namespace enforcing it would admit it."""
    problems = []
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"pod: {field} is not allowed")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl['name']} is not allowed")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {', '.join(sorted(kinds))} is not allowed")
    if pod_context.get("runAsUser") == 0:
        problems.append("pod: runAsUser 0")
    containers = (pod.get("initContainers") or []) + pod["containers"] + (pod.get("ephemeralContainers") or [])
    for container in containers:
        name = f"container {container['name']}"
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{name}: AppArmor unconfined")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def test_the_checker_finds_what_the_standard_forbids():
    bare = {"containers": [{"name": "web", "image": "condense:0.1.0"}], "volumes": [{"name": "h", "hostPath": {}}]}
    problems = restricted_violations(bare)
    for expected in ("allowPrivilegeEscalation", "drop ALL", "runAsNonRoot", "seccompProfile", "hostPath"):
        assert any(expected in line for line in problems), (expected, problems)
    web = next(spec for name, spec in _condense_pods() if "web" in name)
    broken = yaml.safe_load(yaml.safe_dump(web))
    broken["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del broken["securityContext"]["seccompProfile"]
    problems = restricted_violations(broken)
    assert any("allowPrivilegeEscalation" in line for line in problems), problems
    assert any("seccompProfile" in line for line in problems), problems


@pytest.mark.parametrize("name_and_pod", _pods(K8S), ids=lambda item: item[0])
def test_every_pod_passes_the_restricted_pod_security_standard(name_and_pod):
    name, pod = name_and_pod
    assert restricted_violations(pod) == [], name


def test_the_namespace_enforces_the_restricted_standard():
    namespaces = [doc for _, doc in _manifests(K8S) if doc["kind"] == "Namespace"]
    assert [ns["metadata"]["name"] for ns in namespaces] == ["condense"]
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ------------------------------------------------------------------------------------------------- the API schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_api_schemas(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for path, resource in _manifests(K8S):
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.relative_to(ROOT)} {resource['kind']}/{resource['metadata']['name']}: {error.message}")
        checked += 1
    assert checked >= 10


def test_a_schema_error_is_caught():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    _, web = next((p, doc) for p, doc in _manifests(K8S) if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(web))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", ["condense", "trial"])
def test_kustomize_renders_each_overlay(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
    assert {"Namespace", "ConfigMap", "Deployment", "Job", "Service"} <= set(kinds)
    if overlay == "trial":
        config = next(doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "ConfigMap")
        assert config["data"]["CONDENSE_S3_ENDPOINT_URL"] == "http://minio:9000"


# ---------------------------------------------------------------------------------------------- the Condense pods


def test_condense_pods_are_locked_down_and_pinned():
    pods = _condense_pods()
    assert {name.rsplit("/", 1)[-1] for name, _ in pods} == {"condense-web", "condense-worker", "condense-bootstrap"}
    for name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, name
        mounts = {}
        for container in pod["containers"]:
            image = container["image"]
            tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert tag and tag != "latest", (name, image)
            assert container["imagePullPolicy"] == "IfNotPresent", name
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for path in ("/tmp", "/data"):  # writable places on a read-only root
            assert "emptyDir" in volumes[mounts[path]], (name, path)
        assert pod["securityContext"]["runAsUser"] == 10001, name


def _container(component: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = next(spec for name, spec in _condense_pods() if name.endswith(f"condense-{component}"))
    return pod, pod["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env") or []}


def test_web_pods_outlive_gunicorns_graceful_timeout_and_probe_over_http():
    pod, web = _container("web")
    assert pod["terminationGracePeriodSeconds"] > _graceful_timeout()
    expected = {"startupProbe": "/api/v1/live", "livenessProbe": "/api/v1/live", "readinessProbe": "/api/v1/health"}
    for probe, path in expected.items():
        assert web[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert web["ports"][0] == {"name": "http", "containerPort": 8000}


def test_liveness_holds_and_readiness_fails_while_the_database_is_down(tmp_path):
    """The probed paths in the app: with the stores reachable both answer 200; with PostgreSQL unreachable the
    readiness path answers 503 and the liveness path still 200, so the pod leaves the Service but is not restarted."""
    import socket

    from service.app import create_app
    from service.settings import Settings

    _, web = _container("web")
    live, ready = web["livenessProbe"]["httpGet"]["path"], web["readinessProbe"]["httpGet"]["path"]
    client = create_app(Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path / "up")})).test_client()
    assert client.get(ready).status_code == 200 and client.get(ready).get_json()["status"] == "ok"
    assert client.get(live).status_code == 200
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = {"CONDENSE_DATA_DIR": str(tmp_path / "down"), "CONDENSE_DATABASE_URL": f"postgresql://c@127.0.0.1:{port}/x"}
    client = create_app(Settings.from_env(down)).test_client()
    assert client.get(ready).status_code == 503
    assert client.get(live).status_code == 200


def _gunicorn_setting(name: str, env: dict[str, str]) -> str:
    """``name`` from deploy/gunicorn.conf.py loaded in a fresh process with ``env``, checked by gunicorn's own
    validator (gunicorn refuses to start on a value it rejects)."""
    script = (
        "import runpy, sys; from gunicorn.config import Config; "
        f"value = runpy.run_path('deploy/gunicorn.conf.py')[{name!r}]; "
        f"config = Config(); config.set({name!r}, value); print(value)"
    )
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-c", script], env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.servers  # asks gunicorn's own config loader in new processes
def test_gunicorn_believes_forwarded_headers_from_the_configured_proxies_only(tmp_path):
    data = {"CONDENSE_DATA_DIR": str(tmp_path)}
    assert _gunicorn_setting("forwarded_allow_ips", data) == "127.0.0.1,::1"
    configured = {**data, "CONDENSE_FORWARDED_ALLOW_IPS": "10.0.0.0/8,192.168.4.7"}
    assert _gunicorn_setting("forwarded_allow_ips", configured) == "10.0.0.0/8,192.168.4.7"
    config = yaml.safe_load((K8S / "condense" / "configmap.yaml").read_text())["data"]
    shipped = {**data, "CONDENSE_FORWARDED_ALLOW_IPS": config["CONDENSE_FORWARDED_ALLOW_IPS"]}
    assert _gunicorn_setting("forwarded_allow_ips", shipped) == "127.0.0.1,::1"


def _mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The volume holding the file ``path`` in ``container``, and the file's path inside that volume."""
    for mount in container["volumeMounts"]:
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder):
            volume = next(volume for volume in pod["volumes"] if volume["name"] == mount["name"])
            return volume, path.removeprefix(folder)
    raise AssertionError(f"{path} is on no volume of {container['name']}")


def test_web_replicas_read_the_session_key_from_the_mounted_secret(tmp_path):
    from service.settings import Settings

    pod, web = _container("web")
    variables = _env(web)
    assert "CONDENSE_SECRET_KEY" not in variables  # one source of the key (setting both is refused)
    key_path = variables["CONDENSE_SECRET_KEY_FILE"]["value"]
    volume, inside = _mounted_file(pod, web, key_path)
    secret = volume["secret"]
    assert secret["secretName"] == "condense-secrets"
    assert secret["items"] == [{"key": "CONDENSE_SECRET_KEY", "path": inside}]
    assert not secret.get("optional"), "a missing key must stop the pod, not give each replica its own"
    # What the pod sees: the Secret's value as a file, read by the settings like any mounted secret.
    mounted = tmp_path / inside
    mounted.write_text("k" * 64)
    env = {"CONDENSE_DATA_DIR": str(tmp_path / "data"), "CONDENSE_SECRET_KEY_FILE": str(mounted)}
    settings = Settings.from_env(env)
    assert settings.session_secret() == "k" * 64


def test_workers_size_their_thread_pools_to_the_cpu_limit():
    pod, worker = _container("worker")
    assert worker["resources"]["limits"]["cpu"]
    for variable in ("CONDENSE_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        field = _env(worker)[variable]["valueFrom"]["resourceFieldRef"]
        assert field["resource"] == "limits.cpu", variable
        assert field["divisor"] == "1", variable  # whole CPUs: 500m becomes 1, never 0
    assert pod["terminationGracePeriodSeconds"] >= 40  # the worker waits up to 25 s for a job to stop, then syncs


def _probe_commands() -> list[tuple[str, list[str]]]:
    """Every exec probe of the Condense pods and every compose health check that runs a command, with its source."""
    found = []
    for name, pod in _condense_pods():
        for container in pod["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in (container.get(probe) or {}):
                    found.append((f"{name} {probe}", container[probe]["exec"]["command"]))
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD" and test[1] == "condense":
            found.append((f"compose {name} healthcheck", test[1:]))
    return found


def _run_condense(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    assert argv[0] == "condense"
    command = [os.environ.get("PYTHON", sys.executable), "-m", "service.cli", *argv[1:]]
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_worker_probes_read_the_heartbeat_file_the_worker_loop_touches():
    pod, worker = _container("worker")
    path = _env(worker)["CONDENSE_WORKER_HEARTBEAT_FILE"]["value"]
    volume, _ = _mounted_file(pod, worker, path)
    assert "emptyDir" in volume  # the pod's own: one file per worker process
    for probe in ("startupProbe", "livenessProbe"):
        command = worker[probe]["exec"]["command"]
        assert command[:3] == ["condense", "worker", "--check-heartbeat"], probe
        assert float(command[3]) >= 300, "far above the longest step of a job without a stop check"
        assert worker[probe]["timeoutSeconds"] >= 10, "a Python process starting on a busy pod"
    assert worker["startupProbe"]["periodSeconds"] * worker["startupProbe"]["failureThreshold"] >= 120


@pytest.mark.servers  # runs each probe command in a shell
@pytest.mark.parametrize("source_and_command", _probe_commands(), ids=lambda item: item[0])
def test_each_heartbeat_probe_passes_on_a_fresh_file_and_fails_on_an_old_one(source_and_command, tmp_path):
    """The probe command exactly as the manifest or compose file writes it, run against a real heartbeat file."""
    source, command = source_and_command
    beat = tmp_path / "alive"
    env = {"CONDENSE_DATA_DIR": str(tmp_path / "data"), "CONDENSE_WORKER_HEARTBEAT_FILE": str(beat)}
    missing = _run_condense(command, env)
    assert missing.returncode == 1 and "no heartbeat file" in missing.stderr, (source, missing.stderr)
    beat.write_text("pid 1\n")
    fresh = _run_condense(command, env)
    assert fresh.returncode == 0, (source, fresh.stderr)
    max_age = float(command[command.index("--check-heartbeat") + 1])
    old = time.time() - max_age - 5
    os.utime(beat, (old, old))
    stale = _run_condense(command, env)
    assert stale.returncode == 1 and "stuck" in stale.stderr, (source, stale.stderr)


def test_every_condense_command_in_the_deploy_files_parses():
    """The commands the containers, probes and the bootstrap script run, through the CLI's own parser."""
    from service.cli.main import build_parser

    commands = [(source, argv) for source, argv in _probe_commands()]
    for name, pod in _condense_pods():
        for container in pod["containers"]:
            if container["command"][0] == "condense":
                commands.append((name, container["command"]))
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if isinstance(service.get("command"), list) and service["command"][0] == "condense":
            commands.append((f"compose {name}", service["command"]))
    for line in (DEPLOY / "bootstrap.sh").read_text().splitlines():
        if line.strip().startswith("condense "):
            commands.append(("bootstrap.sh", shlex.split(line.replace("$admin", "admin"))))
    assert {"bootstrap.sh", "compose worker"} <= {source for source, _ in commands}
    parser = build_parser()
    for source, argv in commands:
        try:
            parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{source}: {' '.join(argv)} does not parse")


def test_the_bootstrap_job_runs_the_bootstrap_script():
    pod, bootstrap = _container("bootstrap")
    script = Path(bootstrap["command"][0].replace("/app/", f"{ROOT}/", 1))
    assert script.is_file() and os.access(script, os.X_OK), script
    assert pod["restartPolicy"] in ("OnFailure", "Never")


# ----------------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_file_passes_the_compose_schema(tmp_path):
    """Debian's docker-compose (1.29) validates the file against its schema offline; skipped where it is missing."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package) is not installed")
    source = DEPLOY / "docker-compose.yml"
    check = subprocess.run([binary, "-f", str(source), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    misspelt = tmp_path / "docker-compose.yml"
    misspelt.write_text(source.read_text().replace("stop_grace_period: 45s", "stop_grace_priod: 45s"))
    check = subprocess.run([binary, "-f", str(misspelt), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "stop_grace_priod" in check.stderr


def test_compose_builds_the_image_once_and_every_condense_service_uses_it(compose):
    services = compose["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["app"]
    image = services["app"]["image"]
    assert ":" in image and not image.endswith(":latest")
    for name in ("bootstrap", "app", "worker"):
        assert services[name]["image"] == image, name
    for name in ("bootstrap", "worker"):  # never looked for in a registry: "app" builds it
        assert services[name]["pull_policy"] == "never", name


def test_compose_bootstraps_before_serving_and_stops_gracefully(compose):
    services = compose["services"]
    for name in ("app", "worker"):
        assert services[name]["depends_on"]["bootstrap"] == {"condition": "service_completed_successfully"}, name
    assert services["bootstrap"]["command"] == ["/app/deploy/bootstrap.sh"]

    def seconds(text: str) -> float:
        assert text.endswith("s"), text
        return float(text[:-1])

    assert seconds(services["app"]["stop_grace_period"]) > _graceful_timeout()
    assert seconds(services["worker"]["stop_grace_period"]) >= 40
    for variable in ("CONDENSE_NUM_THREADS", "OMP_NUM_THREADS"):
        assert services["worker"]["environment"][variable] == str(services["worker"]["cpus"]), variable


def test_compose_services_reading_the_key_file_mount_it(compose):
    readers = [name for name, service in compose["services"].items()
               if "CONDENSE_SECRET_KEY_FILE" in (service.get("environment") or {})]  # fmt: skip
    assert readers == ["app"]  # workers and the bootstrap sign no cookies: they neither need nor mount the key
    for name in readers:
        service = compose["services"][name]
        folder = str(Path(service["environment"]["CONDENSE_SECRET_KEY_FILE"]).parent)
        assert folder in {entry.split(":")[1] for entry in service["volumes"]}, name


def test_compose_checks_workers_by_a_heartbeat_file_of_their_own(compose):
    worker = compose["services"]["worker"]
    path = worker["environment"]["CONDENSE_WORKER_HEARTBEAT_FILE"]
    shared = [entry.split(":")[1].rstrip("/") + "/" for entry in worker["volumes"]]
    assert not any(path.startswith(folder) for folder in shared)  # every replica mounts those same volumes
    assert worker["healthcheck"]["test"][:4] == ["CMD", "condense", "worker", "--check-heartbeat"]


def test_compose_keeps_one_session_key_in_a_named_volume(compose):
    services = compose["services"]
    written = services["bootstrap"]["environment"]["CONDENSE_NEW_SECRET_KEY_FILE"]
    read = services["app"]["environment"]["CONDENSE_SECRET_KEY_FILE"]
    assert written == read
    folder = str(Path(read).parent)
    for name in ("bootstrap", "app"):
        volumes = {entry.split(":")[1]: entry.split(":")[0] for entry in services[name]["volumes"]}
        assert volumes[folder] in compose["volumes"], name  # named, so `down`/`up` keeps it


# ---------------------------------------------------------------------------------------- the image's own scripts


def test_shell_scripts_parse():
    for script in (DEPLOY / "bootstrap.sh",):
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
    for script in ("container-smoke.sh", "container-scaleout-smoke.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True, timeout=10)


def test_healthcheck_fails_without_a_server_and_passes_with_one(tmp_path):
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/v1/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "CONDENSE_BIND": f"0.0.0.0:{free_port}"}
    check = [os.environ.get("PYTHON", "python3"), str(DEPLOY / "healthcheck.py")]
    assert subprocess.run(check, env=env, capture_output=True, timeout=20).returncode == 1
    server = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env["CONDENSE_BIND"] = f"0.0.0.0:{server.server_address[1]}"
        assert subprocess.run(check, env=env, capture_output=True, timeout=20).returncode == 0
    finally:
        server.shutdown()


def test_dockerfile_installs_dependencies_before_the_source_and_ships_the_data_packages():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    deps = next(i for i, line in enumerate(lines) if "pip install -r /tmp/condense-deps/requirements.txt" in line)
    first_source = next(i for i, line in enumerate(lines) if line.startswith("COPY service"))
    assert deps < first_source
    text = "\n".join(lines)
    assert "dataset-fashion-mnist" in text
    assert "animal-mnist==0.4" in text
    assert "download.pytorch.org/whl/cpu" in text  # how to get the CPU-only build
    assert "HEALTHCHECK" in text
