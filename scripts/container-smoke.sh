#!/usr/bin/env bash
# Build the Condense image with podman and use it as a person would (docs/deploy.md records a run):
#   1. build the image from this checkout's files (git-tracked and untracked-but-not-ignored), timed; then build again
#      after a code-only change to check that the dependency layer comes from the cache (timed);
#   2. start `condense serve` in it on a fresh volume, locked down as the Kubernetes pods are (non-root uid 10001,
#      read-only root filesystem, no capabilities, no-new-privileges), and wait for GET /api/v1/health;
#   3. check the demo pool is the full one (Fashion-MNIST and Animal-MNIST included), `condense user add` and
#      `condense token create`, `condense example` in the container;
#   4. submit that teacher and its positives through the HTTP API (curl), wait for the job to succeed, download its ONNX;
#   5. stop the container gracefully, start a new one on the same volume, and check the job, its artefact, the user, its
#      token and the session key survived (and that the demo pool was not rebuilt).
#
#   bash scripts/container-smoke.sh            # prints a summary; exit status 0 when every check passed
# Settings (environment): CONDENSE_SMOKE_IMAGE (default localhost/condense:smoke), CONDENSE_SMOKE_PORT (18080),
# CONDENSE_SMOKE_EPOCHS (30), CONDENSE_SMOKE_KEEP=1 keeps the container and volume for a look afterwards.
#
# Needs root (or sudo) to install podman, runc and debootstrap from Debian when missing. The base image is
# python:3.11-slim when it can be pulled; otherwise one is built from a Debian bookworm root filesystem (debootstrap,
# through the Debian mirror apt uses) and kept as localhost/condense-base:bookworm. pip indexes that the host's pip is
# configured with as local folders (file:// URLs) are mounted into the build, so wheels on this disk are not downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${CONDENSE_SMOKE_IMAGE:-localhost/condense:smoke}
PORT=${CONDENSE_SMOKE_PORT:-18080}
EPOCHS=${CONDENSE_SMOKE_EPOCHS:-30}
KEEP=${CONDENSE_SMOKE_KEEP:-0}
BASE_FALLBACK=localhost/condense-base:bookworm
NAME=condense-smoke-$$
VOLUME=condense-smoke-data-$$
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/condense-smoke.XXXXXX")
SUMMARY=()

log() { echo "[smoke $(date +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAILED: $*"
  if podman container exists "$NAME" 2>/dev/null; then
    log "last lines of the container's log:"
    podman logs --tail 40 "$NAME" >&2 || true
  fi
  exit 1
}
record() { SUMMARY+=("$1"); log "$1"; }
now() { date +%s.%N; }
seconds_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
json_field() { python3 -c "import json, sys; value = json.load(sys.stdin); print(eval(sys.argv[1], {'v': value}))" "$1"; }

cleanup() {
  if [ "$KEEP" = "1" ]; then
    log "kept: container $NAME, volume $VOLUME, files $WORK"
    return
  fi
  podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------------------- tools and podman
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman runc fuse-overlayfs slirp4netns uidmap)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

configure_podman() {
  # runc applies podman's default limits (open files 1048576, ...) to every container, and fails with "error setting
  # rlimits ... operation not permitted" where they exceed what this sandbox may grant: ask for what it has instead.
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nofile" = "unlimited" ] && nofile=1048576
  [ "$nproc" = "unlimited" ] || [ "$nproc" -gt 32768 ] && nproc=32768
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$WORK/containers.conf
}

# ------------------------------------------------------------------------------------------------------- the base
base_image() {
  if timeout 90 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
    echo docker.io/library/python:3.11-slim
    return
  fi
  if ! podman image exists "$BASE_FALLBACK"; then
    log "python:3.11-slim cannot be pulled: building $BASE_FALLBACK from a Debian bookworm root filesystem"
    local started rootfs=$WORK/rootfs
    started=$(now)
    as_root nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
      { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    as_root tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_FALLBACK" >/dev/null
    as_root rm -rf "$rootfs"
    record "base image $BASE_FALLBACK built by debootstrap in $(seconds_since "$started") s"
  fi
  echo "$BASE_FALLBACK"
}

# ------------------------------------------------------------------------------------------------------ the build
build_context() {  # the checkout's files as a fresh clone plus uncommitted work would have them
  local ctx=$WORK/context
  mkdir -p "$ctx"
  git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$ctx"/ 2>/dev/null || true
  echo "$ctx"
}

build() {  # build CONTEXT LOGFILE: timed podman build; prints the seconds
  local ctx=$1 logfile=$2 started
  # docker format: the OCI image format has no HEALTHCHECK, and podman would drop it.
  local args=(--format docker --network host --build-arg "BASE_IMAGE=$BASE" -t "$IMAGE")
  local extra="" url dir
  for url in $(python3 -m pip config get global.extra-index-url 2>/dev/null || true); do
    case "$url" in
      file://*)
        dir=${url#file://}
        dir=${dir%/simple}
        [ -d "$dir" ] && args+=(--volume "$dir:$dir:ro") && extra="$extra $url"
        ;;
    esac
  done
  [ -n "$extra" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra# }")
  # A host that reaches PyPI through a TLS-inspecting proxy trusts it through pip's cert setting: the build needs it too.
  local cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    args+=(--volume "$cert:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
  fi
  started=$(now)
  nice -n 10 podman build "${args[@]}" "$ctx" >"$logfile" 2>&1 || { tail -40 "$logfile" >&2; fail "podman build"; }
  seconds_since "$started"
}

# --------------------------------------------------------------------------------------------- running the image
start_server() {
  podman run -d --name "$NAME" --network host \
    --user 10001:10001 --read-only --tmpfs /tmp:rw,size=2g --cap-drop ALL --security-opt no-new-privileges \
    -v "$VOLUME:/data" -e CONDENSE_BIND="127.0.0.1:$PORT" -e CONDENSE_WEB_WORKERS=1 \
    "$IMAGE" >/dev/null || fail "podman run"
}

wait_healthy() {  # seconds until GET /api/v1/health answered 200
  local started deadline
  started=$(now)
  deadline=$((SECONDS + 600))
  until curl -fsS "$URL/api/v1/health" >"$WORK/health.json" 2>/dev/null; do
    [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" = "true" ] || fail "the container exited"
    [ $SECONDS -lt $deadline ] || fail "no healthy answer within 600 s"
    sleep 2
  done
  [ "$(json_field 'v["status"]' <"$WORK/health.json")" = "ok" ] || fail "health: $(cat "$WORK/health.json")"
  seconds_since "$started"
}

api() {  # api METHOD PATH [curl args...]: JSON answer on stdout; fails on an HTTP error
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $TOKEN" "$@" "$URL/api/v1$path" || fail "$method $path"
}

stop_server() {  # graceful stop (SIGTERM, 60 s); prints the seconds it took
  local started
  started=$(now)
  podman stop -t 60 "$NAME" >/dev/null
  seconds_since "$started"
}

# ------------------------------------------------------------------------------------------------------- the run
install_tools
configure_podman
BASE=$(base_image)
record "base image: $BASE"

CONTEXT=$(build_context)
BUILD_S=$(build "$CONTEXT" "$WORK/build1.log")
record "build (from the checkout): $BUILD_S s"
# A code change, and a pyproject.toml change outside the dependency list: the dependency layer must come from the cache.
echo "# a code-only change" >>"$CONTEXT/service/__init__.py"
echo "# a change outside [project] dependencies" >>"$CONTEXT/pyproject.toml"
CODE_BUILD_S=$(build "$CONTEXT" "$WORK/build2.log")
grep -q "pip install -r /tmp/condense-deps/requirements.txt" "$WORK/build2.log" || fail "no dependency step in the log"
if ! grep -A1 "pip install -r /tmp/condense-deps/requirements.txt" "$WORK/build2.log" | grep -q "Using cache"; then
  fail "a code-only change rebuilt the dependency layer (see $WORK/build2.log)"
fi
record "build after a code-only change: $CODE_BUILD_S s (dependency layer from the cache)"
SIZE=$(podman image inspect -f '{{.Size}}' "$IMAGE")
record "image size: $(python3 -c "print(f'{$SIZE / 1e9:.2f} GB')") ($SIZE bytes)"
[ -n "$(podman image inspect -f '{{.HealthCheck}}' "$IMAGE" 2>/dev/null | grep healthcheck.py)" ] ||
  fail "the image has no HEALTHCHECK"

podman volume create "$VOLUME" >/dev/null
# The bootstrap of compose and Kubernetes (deploy/bootstrap.sh) on the fresh volume, then once more: the second run
# must find the key, the pool and the admin and change nothing.
bootstrap() {
  podman run --rm --user 10001:10001 --read-only --tmpfs /tmp:rw,size=1g --cap-drop ALL \
    --security-opt no-new-privileges --network none -v "$VOLUME:/data" \
    -e CONDENSE_NEW_SECRET_KEY_FILE=/data/bootstrap-key "$IMAGE" /app/deploy/bootstrap.sh
}
started=$(now)
bootstrap >"$WORK/bootstrap1.log" 2>&1 || { cat "$WORK/bootstrap1.log" >&2; fail "bootstrap on a fresh volume"; }
BOOTSTRAP_S=$(seconds_since "$started")
grep -q "session key written" "$WORK/bootstrap1.log" || fail "bootstrap wrote no key: $(cat "$WORK/bootstrap1.log")"
grep -q "user admin (admin" "$WORK/bootstrap1.log" || fail "bootstrap made no admin: $(cat "$WORK/bootstrap1.log")"
grep -q "pool demo built" "$WORK/bootstrap1.log" || fail "bootstrap built no pool: $(cat "$WORK/bootstrap1.log")"
bootstrap >"$WORK/bootstrap2.log" 2>&1 || { cat "$WORK/bootstrap2.log" >&2; fail "bootstrap, second run"; }
for expected in "exists; kept" "pool demo exists" "user admin exists; nothing to do"; do
  grep -q "$expected" "$WORK/bootstrap2.log" || fail "bootstrap again: no '$expected' in $(cat "$WORK/bootstrap2.log")"
done
record "bootstrap.sh on a fresh volume (key, demo pool, admin): $BOOTSTRAP_S s; run again: nothing changed"
start_server
FIRST_START_S=$(wait_healthy)
record "first start after the bootstrap until healthy: $FIRST_START_S s"
# The image's own HEALTHCHECK, run once by hand (podman schedules it with systemd timers, absent in some sandboxes).
podman healthcheck run "$NAME" >/dev/null 2>&1 || fail "the image's HEALTHCHECK reports the serving container unhealthy"
record "the image's HEALTHCHECK: healthy"

podman exec "$NAME" condense pool show demo --json >"$WORK/pool.json" || fail "condense pool show demo"
POOL_COUNT=$(json_field 'v["count"]' <"$WORK/pool.json")
POOL_SOURCES=$(json_field '",".join(sorted(v["sources"]))' <"$WORK/pool.json")
for source in fashion-mnist-test mnist-digits animal-mnist sklearn-digits; do
  case ",$POOL_SOURCES," in *",$source,"*) ;; *) fail "the demo pool lacks $source (sources: $POOL_SOURCES)" ;; esac
done
[ "$POOL_COUNT" -ge 4400 ] || fail "the demo pool has $POOL_COUNT images, expected the full 4,500 less duplicates"
record "demo pool: $POOL_COUNT images from $POOL_SOURCES"

podman exec "$NAME" condense user add smoke >"$WORK/user.log" 2>&1 || { cat "$WORK/user.log" >&2; fail "condense user add"; }
TOKEN=$(podman exec "$NAME" condense token create smoke --label smoke 2>/dev/null) || fail "condense token create"
record "condense user add smoke, condense token create smoke: ok"
KEY_BEFORE=$(podman exec "$NAME" sha256sum /data/secret_key | cut -d' ' -f1)

started=$(now)
podman exec "$NAME" condense example /tmp/example >"$WORK/example.log" 2>&1 || { cat "$WORK/example.log" >&2; fail "condense example"; }
mkdir -p "$WORK/example"
podman exec "$NAME" tar -C /tmp/example -c teacher.pt positives.zip | tar -C "$WORK/example" -x
record "condense example in the container: $(seconds_since "$started") s; $(grep -i -m1 accuracy "$WORK/example.log" || true)"

OPTIONS="{\"input_shape\": [1, 28, 28], \"epochs\": $EPOCHS}"
api POST /jobs -F "teacher=@$WORK/example/teacher.pt" -F "positives=@$WORK/example/positives.zip" \
  -F "options=$OPTIONS" >"$WORK/job.json"
JOB=$(json_field 'v["id"]' <"$WORK/job.json")
started=$(now)
deadline=$((SECONDS + 1800))
while :; do
  api GET "/jobs/$JOB" >"$WORK/job.json"
  STATUS=$(json_field 'v["status"]' <"$WORK/job.json")
  case "$STATUS" in
    succeeded) break ;;
    failed | cancelled) fail "job $JOB $STATUS: $(json_field 'v.get("error")' <"$WORK/job.json")" ;;
  esac
  [ $SECONDS -lt $deadline ] || fail "job $JOB still $STATUS after 1800 s"
  sleep 5
done
JOB_S=$(seconds_since "$started")
METRICS=$(json_field '{k: v["metrics"][k] for k in ("student_accuracy", "teacher_accuracy", "evaluated_on", "mined") if k in v["metrics"]}' <"$WORK/job.json")
EVALUATED=$(json_field '[a["name"] for a in v["artifacts"] if a["name"] == "report.json"]' <"$WORK/job.json")
if [ "$EVALUATED" = "['report.json']" ]; then
  api GET "/jobs/$JOB/artifacts/report.json" -L -o "$WORK/report.json"
  METRICS="$METRICS, evaluated on $(json_field '"{} {} and {} held-back pool images".format(v["summary"]["images"], v["summary"]["evaluated_on"], (v["evaluation"].get("pool") or {}).get("images", 0))' <"$WORK/report.json")"
fi
record "job $JOB ($EPOCHS epochs) succeeded through the HTTP API in $JOB_S s: $METRICS"
ONNX=$(json_field '[a["name"] for a in v["artifacts"] if a["name"].endswith(".onnx")][0]' <"$WORK/job.json")
api GET "/jobs/$JOB/artifacts/$ONNX" -o "$WORK/student.onnx"
python3 -c "import sys; data = open(sys.argv[1], 'rb').read(); assert len(data) > 1000, len(data)" "$WORK/student.onnx" ||
  fail "downloaded $ONNX is not a model"
record "downloaded $ONNX: $(stat -c %s "$WORK/student.onnx") bytes"

STOP_S=$(stop_server)
record "graceful stop (SIGTERM): $STOP_S s"
podman rm "$NAME" >/dev/null
start_server
RESTART_S=$(wait_healthy)
record "restart on the same volume until healthy: $RESTART_S s"
api GET "/jobs/$JOB" >"$WORK/job-after.json"
[ "$(json_field 'v["status"]' <"$WORK/job-after.json")" = succeeded ] || fail "the job is not succeeded after a restart"
api GET "/jobs/$JOB/artifacts/$ONNX" -o "$WORK/student-after.onnx"
cmp -s "$WORK/student.onnx" "$WORK/student-after.onnx" || fail "the artefact changed across the restart"
if podman exec "$NAME" condense user add smoke >"$WORK/user-again.log" 2>&1; then
  fail "user smoke was created a second time: it did not persist"
fi
grep -q "already exists" "$WORK/user-again.log" || fail "user add again: $(cat "$WORK/user-again.log")"
[ "$(podman exec "$NAME" sha256sum /data/secret_key | cut -d' ' -f1)" = "$KEY_BEFORE" ] || fail "the session key changed"
podman logs "$NAME" 2>&1 | grep -q "building the demo pool" && fail "the demo pool was built again after the restart"
record "after the restart: job succeeded, same artefact bytes, user and token kept, same session key, pool kept"

echo
echo "container smoke test passed ($IMAGE)"
printf '  %s\n' "${SUMMARY[@]}"
