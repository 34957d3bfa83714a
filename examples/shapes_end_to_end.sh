#!/usr/bin/env bash
# From nothing to a routed request on real inference, on CPU, printing each stage's time:
#   1. write a shapes VQA dataset            (mllm-offload shapes generate)
#   2. train the edge and cloud VLMs         (mllm-offload shapes train)
#   3. serve the cloud model on loopback     (mllm-offload serve --slowdown F)
#   4. record a trace from real inference    (mllm-offload record)
#   5. train PPO on it, export, compare      (python train.py --trace ...)
#   6. route one request through the policy  (mllm-offload route + the OpenAI client)
#
# Usage: bash examples/shapes_end_to_end.sh [WORK_DIR]       (default: runs/shapes-e2e)
# Environment: N (dataset items, 3000), TIMESTEPS (PPO steps, 60000), SLOWDOWN (cloud compute
# factor, 1), BANDWIDTH (a folder of real bandwidth traces or an embedded name; default
# pensieve-sample, 24 real 3G/broadband traces shipped in the package), QUICK=1 (a smoke run:
# tiny sizes, minutes).
# Needs: pip install torch==2.13.0 && pip install -c constraints.txt -e ".[dev]"
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/shapes-e2e}
N=${N:-3000}
TIMESTEPS=${TIMESTEPS:-60000}
SLOWDOWN=${SLOWDOWN:-1}
SCENES=${SCENES:-}
STEPS=()
if [ "${QUICK:-0}" = "1" ]; then
  N=60; TIMESTEPS=2048; SCENES=200; STEPS=(--edge-steps 30 --cloud-steps 10 --edge-vision-steps 20 --cloud-vision-steps 10 --eval 60)
fi
BW_ARGS=(--bandwidth "${BANDWIDTH:-pensieve-sample}")
CLOUD_PORT=${CLOUD_PORT:-18431}
ROUTE_PORT=${ROUTE_PORT:-18432}
mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
TIMES=()
stage() {  # stage NAME CMD...: run, time, remember
  local name=$1; shift
  echo "== $name: $*"
  local t0; t0=$(date +%s.%N)
  "$@"
  local dt; dt=$(python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
  echo "== $name: ${dt} s"
  TIMES+=("$(printf '%-28s %8s s' "$name" "$dt")")
}
wait_http() {  # wait_http URL SECONDS
  python - "$1" "$2" <<'EOF'
import sys, time, httpx
url, limit = sys.argv[1], float(sys.argv[2])
t = time.time()
while time.time() - t < limit:
    try:
        if httpx.get(url, timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit(f"{url}: not up after {limit:.0f} s")
EOF
}

SCENE_ARGS=()
if [ -n "$SCENES" ]; then SCENE_ARGS=(--scenes "$SCENES"); fi
stage "1 generate dataset" mllm-offload shapes generate --out "$WORK/data" --n "$N" --quiet
stage "2 train edge+cloud VLMs" mllm-offload shapes train --out "$WORK/models" "${SCENE_ARGS[@]}" "${STEPS[@]}" --quiet

start_cloud() {
  mllm-offload serve --model "$WORK/models/cloud" --port "$CLOUD_PORT" --slowdown "$SLOWDOWN" --unsupported ignore --threads 1 \
    > "$WORK/serve.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$CLOUD_PORT/health" 120
}
stage "3 start cloud node" start_cloud
smoke_note() {  # smoke_note WHAT: QUICK=1 trains the VLMs for a few dozen steps, what they answer says nothing
  if [ "${QUICK:-0}" = "1" ]; then
    echo "note: QUICK=1 is a smoke run of barely trained models: $1 not meaningful"
  fi
}
stage "4 record trace" mllm-offload record --edge "$WORK/models/edge" --cloud "http://127.0.0.1:$CLOUD_PORT/v1" \
  --unsupported ignore --threads 1 --dataset "jsonl:$WORK/data/shapes.jsonl" --out "$WORK/shapes-trace.jsonl.gz" \
  --max-new-tokens 4 --rate 0.25 --quiet
stage "5 train PPO + evaluate" python train.py --trace "$WORK/shapes-trace.jsonl.gz" "${BW_ARGS[@]}" \
  --timesteps "$TIMESTEPS" --out "$WORK/ppo" --overwrite --quiet
smoke_note "the recorded scores, the rewards and the verdict above are"

route_one() {
  mllm-offload route --edge "$WORK/models/edge" --cloud "http://127.0.0.1:$CLOUD_PORT/v1" --policy "$WORK/ppo/policy" \
    --unsupported ignore --threads 1 --port "$ROUTE_PORT" --log-dir "$WORK/route-logs" > "$WORK/route.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$ROUTE_PORT/health" 120
  python - "$ROUTE_PORT" "$WORK/data" <<'EOF'
import base64, json, pathlib, sys
from openai import OpenAI
port, data = sys.argv[1], pathlib.Path(sys.argv[2])
item = next(json.loads(l) for l in (data / "shapes.jsonl").read_text().splitlines() if '"image"' in l)
img = base64.b64encode((data / item["image"]).read_bytes()).decode()
client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
raw = client.chat.completions.with_raw_response.create(
    model="router", max_tokens=4,
    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{img}"}},
                                           {"type": "text", "text": item["question"]}]}])
r = raw.parse()
print(f"question: {item['question']} | expected: {item['answers'][0]} | answer: {r.choices[0].message.content!r} | "
      f"mode {raw.headers.get('x-offload-mode')}, answered by {raw.headers.get('x-offload-answered-by')}")
EOF
  smoke_note "this answer is"
}
stage "6 route a request" route_one

echo
echo "stage timings ($WORK):"
printf '  %s\n' "${TIMES[@]}"
