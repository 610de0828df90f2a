#!/usr/bin/env bash
# The README's first-use timings, measured from a fresh clone with an empty data folder: the first start of
# `condense serve` (demo pool built, service answering), `condense example ex`, and the first job with
# `condense submit --wait`. Python packages must be installed already (README step 1's pip install); the clone runs
# from its own folder, so what is timed is the committed code.
#
#   bash scripts/readme-timings.sh [PORT]
set -euo pipefail

port="${1:-8765}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d /tmp/condense-readme.XXXXXX)"
clone="$scratch/condense"
export CONDENSE_DATA_DIR="$scratch/data"
export PYTHONPATH="$clone"
git clone --quiet "$repo" "$clone"
cd "$clone"
condense() { python3 -m service.cli "$@"; }

server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s.%N)
python3 -m service.cli serve --bind "127.0.0.1:$port" >"$scratch/serve.log" 2>&1 &
server_pid=$!
until curl -fsS "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1; do
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$scratch/serve.log"; exit 1; fi
  sleep 0.5
done
ready=$(date +%s.%N)
grep -i "demo pool" "$scratch/serve.log" | tail -2 || true
printf 'first start (demo pool built, service answering): %.0f s\n' "$(echo "$ready - $started" | bc)"

started=$(date +%s.%N)
condense example ex >"$scratch/example.log" 2>&1
printf 'condense example ex: %.0f s\n' "$(echo "$(date +%s.%N) - $started" | bc)"

started=$(date +%s.%N)
condense submit --server "http://127.0.0.1:$port" --token "$(cat "$CONDENSE_DATA_DIR/first-token")" \
  --teacher ex/teacher.pt --positives ex/positives.zip --input-shape 1,28,28 --epochs 30 --wait --out ex/result \
  >"$scratch/submit.log" 2>&1
printf 'condense submit ... --wait: %.0f s\n' "$(echo "$(date +%s.%N) - $started" | bc)"
tail -12 "$scratch/submit.log"
ls -l ex/result
python3 - "$clone/ex/result/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
student, teacher = report["student"], report["teacher"]
print("student:", student.get("sizing", {}).get("reason", "")[:300])
print("mined:", report.get("mining", {}).get("selected"), "stages:", report.get("stages_s"))
for batch in ("1", "32"):
    t = teacher.get("latency", {}).get(batch, {}).get("median_ms")
    s = student.get("latency", {}).get(batch, {}).get("median_ms")
    if t and s:
        print(f"batch {batch}: teacher {t:.3f} ms, student {s:.3f} ms, {t / s:.2f}x")
EOF
echo "logs and files: $scratch"
