#!/usr/bin/env bash
# The scale-out roles of the image, run with podman as compose and Kubernetes run them, against real servers started
# here on loopback (PostgreSQL and Redis from Debian, moto's S3 server from PyPI) instead of their container images:
#   1. the bootstrap (deploy/bootstrap.sh) writes the session key into a volume, builds the demo pool into S3 and
#      creates the admin in PostgreSQL; run again, it changes nothing;
#   2. two web replicas (gunicorn, deploy/gunicorn.conf.py) read the one key through CONDENSE_SECRET_KEY_FILE: a
#      sign-in cookie from one is accepted by the other;
#   3. a job worker (condense worker, OMP_NUM_THREADS=2) takes a job submitted to one replica from Redis, and the other
#      replica reports it succeeded; its ONNX student downloads from S3.
#
#   bash scripts/container-smoke.sh && bash scripts/container-scaleout-smoke.sh
# Uses the image container-smoke.sh built (CONDENSE_SMOKE_IMAGE, default localhost/condense:smoke). Needs root for the
# PostgreSQL cluster (run as the postgres user), postgresql and redis-server (Debian) and moto[server] (pip).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${CONDENSE_SMOKE_IMAGE:-localhost/condense:smoke}
EPOCHS=${CONDENSE_SMOKE_EPOCHS:-30}
PG_PORT=25432
REDIS_PORT=26379
S3_PORT=25000
WEB1=127.0.0.1:28081
WEB2=127.0.0.1:28082
RUN=scaleout-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/condense-scaleout.XXXXXX")
chmod 755 "$WORK"
PIDS=()

log() { echo "[scale-out $(date +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAILED: $*"
  for name in web1 web2 worker; do
    podman container exists "$RUN-$name" 2>/dev/null && { log "$name:"; podman logs --tail 15 "$RUN-$name" >&2 || true; }
  done
  exit 1
}
json_field() { python3 -c "import json, sys; value = json.load(sys.stdin); print(eval(sys.argv[1], {'v': value}))" "$1"; }

cleanup() {
  for name in web1 web2 worker; do podman rm -f -v -t 5 "$RUN-$name" >/dev/null 2>&1 || true; done
  podman volume rm -f "$RUN-keys" >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -d "$WORK/pg/data" ] && su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $WORK/pg/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The podman settings container-smoke.sh uses (this host's runc limits).
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nproc" = "unlimited" ] || [ "$nproc" -gt 32768 ] && nproc=32768
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' "$nofile" "$nofile" "$nproc" "$nproc" \
  >"$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
podman image exists "$IMAGE" || fail "no image $IMAGE: run scripts/container-smoke.sh first"

# ---------------------------------------------------------------------------------------------------- the servers
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
su postgres -s /bin/sh -c "$PG_BIN/initdb -D $WORK/pg/data -U condense -A trust --no-sync >/dev/null"
su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $WORK/pg/data -l $WORK/pg/log -w -o '-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1' start >/dev/null"
su postgres -s /bin/sh -c "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U condense condense"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do curl -s "http://127.0.0.1:$S3_PORT" >/dev/null && break; sleep 0.5; done
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test python3 -c "
import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$S3_PORT', region_name='us-east-1').create_bucket(Bucket='condense')"
log "PostgreSQL :$PG_PORT, Redis :$REDIS_PORT, S3 (moto) :$S3_PORT up"

ENV=(
  -e "CONDENSE_DATABASE_URL=postgresql://condense@127.0.0.1:$PG_PORT/condense"
  -e "CONDENSE_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
  -e CONDENSE_BLOB_URL=s3://condense/blobs
  -e "CONDENSE_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
  -e AWS_ACCESS_KEY_ID=test -e AWS_SECRET_ACCESS_KEY=test -e AWS_DEFAULT_REGION=us-east-1
  -e CONDENSE_DATA_DIR=/data
)
LOCKED=(--network host --user 10001:10001 --read-only --tmpfs /tmp:rw,size=2g
  --cap-drop ALL --security-opt no-new-privileges)
podman volume create "$RUN-keys" >/dev/null

# --------------------------------------------------------------------------------------------------- the bootstrap
bootstrap() {
  podman run --rm "${LOCKED[@]}" "${ENV[@]}" -e CONDENSE_NEW_SECRET_KEY_FILE=/keys/secret_key -v "$RUN-keys:/keys" \
    "$IMAGE" /app/deploy/bootstrap.sh
}
start=$SECONDS
bootstrap >"$WORK/bootstrap1.log" 2>&1 || { cat "$WORK/bootstrap1.log" >&2; fail "bootstrap"; }
for expected in "session key written" "pool demo built" "user admin (admin"; do
  grep -q "$expected" "$WORK/bootstrap1.log" || fail "bootstrap: no '$expected' in $(cat "$WORK/bootstrap1.log")"
done
log "bootstrap against PostgreSQL and S3: key, demo pool, admin in $((SECONDS - start)) s"
bootstrap >"$WORK/bootstrap2.log" 2>&1 || { cat "$WORK/bootstrap2.log" >&2; fail "bootstrap again"; }
for expected in "exists; kept" "pool demo exists" "user admin exists; nothing to do"; do
  grep -q "$expected" "$WORK/bootstrap2.log" || fail "bootstrap again: no '$expected' in $(cat "$WORK/bootstrap2.log")"
done
log "bootstrap again: nothing changed"

# ------------------------------------------------------------------------------------------- two web replicas, a worker
for replica in 1 2; do
  bind=WEB$replica
  podman run -d --name "$RUN-web$replica" "${LOCKED[@]}" "${ENV[@]}" -e "CONDENSE_BIND=${!bind}" \
    -e CONDENSE_WEB_WORKERS=1 -e CONDENSE_WEB_THREADS=4 -e CONDENSE_SECRET_KEY_FILE=/keys/secret_key \
    -v "$RUN-keys:/keys:ro" "$IMAGE" gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()' >/dev/null
done
podman run -d --name "$RUN-worker" --no-healthcheck "${LOCKED[@]}" "${ENV[@]}" -e OMP_NUM_THREADS=2 \
  -e MKL_NUM_THREADS=2 "$IMAGE" condense worker >/dev/null
for bind in "$WEB1" "$WEB2"; do
  for _ in $(seq 120); do curl -fs "http://$bind/api/v1/health" >/dev/null && break; sleep 1; done
  curl -fs "http://$bind/api/v1/health" >/dev/null || fail "web replica $bind never healthy"
done
log "two web replicas healthy, one worker started"

TOKEN=$(podman exec "$RUN-web1" condense token create admin 2>/dev/null) || fail "token create"
# The sign-in form comes from replica 2 (its CSRF token lives in the session cookie replica 2 signed), is sent to
# replica 1, and the signed-in session is used on replica 2: every step needs the one key.
curl -s -c "$WORK/cookies" "http://$WEB2/sign-in" >"$WORK/sign-in.html"
CSRF=$(python3 -c "import re, sys; print(re.search(r'name=\"csrf_token\" value=\"([^\"]+)\"', sys.stdin.read()).group(1))" \
  <"$WORK/sign-in.html") || fail "no CSRF token in the sign-in form"
code=$(curl -s -o /dev/null -w '%{http_code}' -b "$WORK/cookies" -c "$WORK/cookies" --data-urlencode "token=$TOKEN" \
  --data-urlencode "csrf_token=$CSRF" "http://$WEB1/sign-in")
[ "$code" = 303 ] || fail "sign-in on replica 1 with replica 2's form answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -b "$WORK/cookies" "http://$WEB2/jobs")
[ "$code" = 200 ] || fail "replica 2 refused replica 1's sign-in cookie ($code)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$WEB2/jobs")
[ "$code" != 200 ] || fail "replica 2 shows the jobs page without a cookie"
log "a sign-in on replica 1 is accepted by replica 2 (one session key)"

# --------------------------------------------------------------------------------------------------------- a job
podman exec "$RUN-worker" condense example /tmp/example >"$WORK/example.log" 2>&1 || fail "condense example"
mkdir -p "$WORK/example"
podman exec "$RUN-worker" tar -C /tmp/example -c teacher.pt positives.zip | tar -C "$WORK/example" -x
JOB=$(curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" -F "teacher=@$WORK/example/teacher.pt" \
  -F "positives=@$WORK/example/positives.zip" -F "options={\"input_shape\": [1, 28, 28], \"epochs\": $EPOCHS}" \
  "http://$WEB1/api/v1/jobs" | json_field 'v["id"]') || fail "submit"
start=$SECONDS
while :; do
  curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" "http://$WEB2/api/v1/jobs/$JOB" >"$WORK/job.json" ||
    fail "GET job"
  status=$(json_field 'v["status"]' <"$WORK/job.json")
  [ "$status" = succeeded ] && break
  case "$status" in failed | cancelled) fail "job $status: $(json_field 'v.get("error")' <"$WORK/job.json")" ;; esac
  [ $((SECONDS - start)) -lt 1800 ] || fail "job still $status after 1800 s"
  sleep 5
done
curl -sS -L --fail-with-body -H "Authorization: Bearer $TOKEN" -o "$WORK/student.onnx" \
  "http://$WEB2/api/v1/jobs/$JOB/artifacts/student.onnx" || fail "download from S3"
[ "$(stat -c %s "$WORK/student.onnx")" -gt 1000 ] || fail "student.onnx is empty"
log "job submitted to replica 1, run by the worker, succeeded in $((SECONDS - start)) s (seen on replica 2); ONNX from S3: $(stat -c %s "$WORK/student.onnx") bytes"
echo "scale-out smoke test passed ($IMAGE)"
