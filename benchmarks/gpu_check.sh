#!/usr/bin/env bash
# GPU check (issue 20, item 5): one script for a fresh one-GPU machine, < 8 minutes in all.
#
#   benchmarks/gpu_check.sh              # set up, run every step, write the JSON
#   benchmarks/gpu_check.sh --dry-run    # print what it would install and run; runs and writes nothing
#   GPU_CHECK_ACCELERATOR=cpu benchmarks/gpu_check.sh   # every step on the CPU at tiny sizes (~minutes)
#
# Steps, in this order (each under `timeout`; a failed step is recorded and the next one runs):
#   setup          pip install -e '.[test]' only if recbench's imports fail; on gpu, a CUDA torch
#                  (same version, from PyPI, else the PyTorch index) only if torch.cuda.is_available()
#                  is False; then the environment (torch, CUDA, device, bf16 support)
#   ctr_din        recbench DIN on the CTR benchmark's Tmall samples and settings
#   ctr_deepfm     (recbench/bench/ctr.py: CTRSettings, recbench_overrides; dense Adam as
#                  recbench/bench/gpu.py trains them on CUDA), GPU_CHECK_CTR_EPOCHS epochs, fp32
#   a2gen, moment_cross, llm_alignment, lcu
#                  each paper model on its dataset (recbench/bench/models.py: PAPER_MODELS) for
#                  GPU_CHECK_STEPS steps with trainer.precision=bf16-mixed (+trainer.max_steps: the
#                  key is not in conf/trainer/default.yaml; +early_stopping.check_on_train_epoch_end=
#                  false, as max_steps may stop inside an epoch); lcu / llm_alignment run their text
#                  stage (the embedded tiny LM, nothing downloaded) first
#   ddp_gpu1       the DDP code path on one device: trainer=ddp trainer.devices=1 (tests/test_ddp.py's
#                  tiny MMoE config)
#   ddp_test       python -m pytest tests/test_ddp.py: two CPU processes (gloo), the DDP evaluation
#                  must equal a single-process one; runs in the background beside the GPU steps
#   fuxictr_ctr    only with GPU_CHECK_FUXICTR=1: FuxiCTR's side of DIN / DeepFM is
#                  `python -m recbench.bench --only ctr` (its own venv, 6 epochs, FuxiCTR on the CPU:
#                  benchmarks/fuxictr_run.py sets gpu=-1); the bench has no epochs flag, so this
#                  takes far longer than the 8 minutes and is off by default
#
# Figures go to $OUT/gpu_check.json when $OUT is set, else experiments/gpu_check.json (one object:
# environment, settings, per step: status passed | failed | timeout | skipped, exit code, seconds,
# training samples/s (all epochs, and the last epoch's), train seconds, peak GPU memory from
# torch.cuda.max_memory_allocated / max_memory_reserved in the training process, a few test
# metrics, the log's tail on failure). The JSON is rewritten after every step, so a killed run
# still leaves one. Logs: $OUT/gpu_check_logs/ (else experiments/gpu_check/logs/); run folders and
# data under experiments/gpu_check/. The script exits 0 when every step that ran passed, else 1.
#
# Settings (environment):
#   GPU_CHECK_ACCELERATOR  gpu (default) | cpu
#   GPU_CHECK_SIZE         full (default on gpu: the benchmarks' sizes) | tiny (default on cpu)
#   GPU_CHECK_STEPS        training steps per paper model (default 200 full, 3 tiny)
#   GPU_CHECK_CTR_EPOCHS   epochs of DIN / DeepFM (default 2 full, 1 tiny)
#   GPU_CHECK_PRECISION    paper models' trainer.precision (default bf16-mixed)
#   GPU_CHECK_CTR_PRECISION DIN / DeepFM's (default 32-true, as the CTR benchmark)
#   GPU_CHECK_BUDGET_S     seconds for the whole script (default 435: with the 15 s a timed-out step
#                          gets to exit before SIGKILL, under 8 minutes); a step gets at most what is
#                          left, and a step that cannot start in time is recorded as skipped
#   GPU_CHECK_ONLY         space-separated step names to run (default: all)
#   GPU_CHECK_FUXICTR      1: add the fuxictr_ctr step
#   GPU_CHECK_WORK         scratch folder (default experiments/gpu_check)
#   PYTHON                 interpreter (default python)

set -uo pipefail
set -f  # no globbing: Hydra overrides hold brackets ([256,128])

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python}
ACC=${GPU_CHECK_ACCELERATOR:-gpu}
case "$ACC" in gpu|cpu) ;; *) echo "gpu_check.sh: GPU_CHECK_ACCELERATOR must be gpu or cpu" >&2; exit 2 ;; esac
if [ "$ACC" = cpu ]; then SIZE=${GPU_CHECK_SIZE:-tiny}; else SIZE=${GPU_CHECK_SIZE:-full}; fi
case "$SIZE" in full|tiny) ;; *) echo "gpu_check.sh: GPU_CHECK_SIZE must be full or tiny" >&2; exit 2 ;; esac
if [ "$SIZE" = tiny ]; then STEPS=${GPU_CHECK_STEPS:-3}; CTR_EPOCHS=${GPU_CHECK_CTR_EPOCHS:-1}
else STEPS=${GPU_CHECK_STEPS:-200}; CTR_EPOCHS=${GPU_CHECK_CTR_EPOCHS:-2}; fi
PRECISION=${GPU_CHECK_PRECISION:-bf16-mixed}
CTR_PRECISION=${GPU_CHECK_CTR_PRECISION:-32-true}
BUDGET=${GPU_CHECK_BUDGET_S:-435}
ONLY=${GPU_CHECK_ONLY:-}
FUXICTR=${GPU_CHECK_FUXICTR:-0}
WORK=${GPU_CHECK_WORK:-$REPO/experiments/gpu_check}
case "$WORK" in /*) ;; *) WORK=$REPO/$WORK ;; esac
if [ -n "${OUT:-}" ]; then JSON=$OUT/gpu_check.json; LOGS=$OUT/gpu_check_logs
else JSON=$REPO/experiments/gpu_check.json; LOGS=$WORK/logs; fi
START=$(date +%s)
export PY ACC WORK

# Sizes: the benchmarks' own (full) or their --quick ones (tiny).
if [ "$SIZE" = tiny ]; then
    CTR_DATA="data.replica.n_users=150 data.replica.n_items=1500 data.replica.episodes_per_user=15.0"
    CTR_BATCH=1024
    TMALL="data.replica.n_users=150 data.replica.n_items=1500 data.replica.episodes_per_user=15"
    KUAICOMT="data.replica.n_users=120 data.replica.n_videos=150 data.replica.impressions_per_user=20"
    KUAILIVE="data.replica.n_users=150 data.replica.n_streamers=150 data.replica.n_authors=300 data.replica.live_exposures_per_user=20"
    TEXT="++text.examples_per_task=30 ++text.pretrain.max_texts=300"  # a small text stage
else
    CTR_DATA="data.replica.n_users=10000 data.replica.n_items=50000 data.replica.episodes_per_user=40.0"
    CTR_BATCH=4096
    TMALL="" KUAICOMT="" KUAILIVE="" TEXT=""
fi
COMMON="trainer.accelerator=$ACC trainer.devices=1 trainer.enable_progress_bar=false logger=none paths.datasets=$WORK/datasets paths.models=$WORK/models"

# Runs `python -m recbench ARGS` in this process and, at exit, writes the CUDA peak memory of the
# training process to $GPU_CHECK_MEM_FILE.
read -r -d '' WRAPPER <<'PYCODE'
import atexit, json, os, runpy, sys

def _peak():
    figures = {}
    try:
        import torch
        figures["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            figures.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                           peak_reserved_bytes=torch.cuda.max_memory_reserved(),
                           device=torch.cuda.get_device_name(0))
    except Exception as error:  # the figure is optional; the step's status comes from its exit code
        figures["error"] = repr(error)
    with open(os.environ["GPU_CHECK_MEM_FILE"], "w") as f:
        json.dump(figures, f)

atexit.register(_peak)
sys.argv = ["recbench", *sys.argv[1:]]
runpy.run_module("recbench", run_name="__main__", alter_sys=True)
PYCODE

# Appends one step's record to $WORK/steps.jsonl (argv: name kind status rc milliseconds limit
# command log run_dir mem_file note), reading results.json / the memory file / pytest's summary.
read -r -d '' RECORD <<'PYCODE'
import json, os, re, sys
name, kind, status, rc, ms, limit, command, log, run_dir, mem_file, note = sys.argv[1:12]
rec = {"step": name, "kind": kind, "status": status, "exit_code": int(rc) if rc else None,
       "seconds": round(int(ms) / 1000, 2) if ms else None, "timeout_s": int(limit) if limit else None,
       "command": command, "log": log or None}
if note:
    rec["note"] = note
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
if kind == "train" and run_dir:
    res = load(os.path.join(run_dir, "results.json"))
    if res is not None:
        rates = res.get("train_epoch_samples_per_second") or []
        test = (res.get("metrics") or {}).get("test") or {}
        rec.update(run_status=res.get("status"), train_seconds=res.get("train_seconds"),
                   samples_per_second=res.get("train_samples_per_second"),
                   last_epoch_samples_per_second=rates[-1] if rates else None,
                   epochs_run=res.get("epochs_run"), world_size=res.get("world_size"),
                   parameters=res.get("parameters"), data_source=res.get("data_source"),
                   test_metrics={k: v for k, v in test.items() if re.search(r"/(auc|gauc|xauc)/", k)} or
                                dict(list(test.items())[:8]))
        if status == "passed" and res.get("status") != "finished":
            rec["status"] = "failed"
    elif status == "passed":
        rec["status"], rec["note"] = "failed", "exit code 0 but no results.json"
    mem = load(mem_file) if mem_file else None
    if mem:
        rec["gpu_memory"] = mem
        if mem.get("peak_allocated_bytes") is not None:
            rec["peak_gpu_memory_gib"] = round(mem["peak_allocated_bytes"] / 2**30, 3)
if kind == "pytest" and log and os.path.exists(log):
    text = open(log, errors="replace").read()
    for word in ("passed", "failed", "error", "skipped"):
        found = re.findall(rf"(\d+) {word}", text[-3000:])
        if found:
            rec[f"tests_{word}"] = int(found[-1])
if kind == "bench" and run_dir:
    bench = load(run_dir)
    if bench:
        ctr = bench.get("ctr") or {}
        rec["ctr"] = {src: {model: {side: {"samples_per_second": r.get("samples_per_second"), "test": r.get("test")}
                                    for side, r in sides.items()}
                            for model, sides in (entry.get("models") or {}).items()}
                      for src, entry in (ctr.get("datasets") or {}).items()}
if kind == "setup" and run_dir:
    env = load(run_dir)
    if env:
        rec["environment"] = env
if rec["status"] in ("failed", "timeout") and log and os.path.exists(log):
    rec["log_tail"] = open(log, errors="replace").read()[-2000:]
with open(os.path.join(os.environ["WORK"], "steps.jsonl"), "a") as f:
    f.write(json.dumps(rec) + "\n")
PYCODE

# Writes the JSON from $WORK/steps.jsonl (argv: json path, settings as key=value ...), atomically.
read -r -d '' FINALIZE <<'PYCODE'
import json, os, platform, sys, time
path, settings = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
steps = []
try:
    with open(os.path.join(os.environ["WORK"], "steps.jsonl")) as f:
        steps = [json.loads(line) for line in f if line.strip()]
except OSError:
    pass
env = next((s.get("environment") for s in steps if s["step"] == "setup" and s.get("environment")), None)
counts = {}
for s in steps:
    counts[s["status"]] = counts.get(s["status"], 0) + 1
doc = {"written": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "cores": os.cpu_count(),
       "load_average": os.getloadavg(), "settings": settings, "environment": env,
       "summary": counts, "ok": bool(steps) and all(s["status"] in ("passed", "skipped") for s in steps),
       "steps": steps}
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
tmp = f"{path}.tmp.{os.getpid()}"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
os.replace(tmp, path)
PYCODE

setup_env() {  # runs under `timeout` in its own bash; prints what it does; environment -> $WORK/env.json
    local imports='import recbench, lightning, hydra, polars, torchmetrics, pytest, sklearn'
    if "$PY" -c "$imports" 2>/dev/null; then
        echo "setup: recbench and its test dependencies import: no pip install -e"
    else
        echo "setup: pip install -e '.[test]'"
        "$PY" -m pip install -q -e '.[test]' || echo "setup: pip install -e '.[test]' FAILED"
    fi
    if [ "$ACC" = gpu ]; then
        local cuda version
        cuda=$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || echo "no torch")
        echo "setup: torch.cuda.is_available() -> $cuda"
        if [ "$cuda" != True ]; then
            version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
            echo "setup: installing a CUDA build of torch${version:+ $version}"
            "$PY" -m pip uninstall -y -q torch
            "$PY" -m pip install -q "torch${version:+==$version}" \
                || "$PY" -m pip install -q --index-url https://download.pytorch.org/whl/cu128 "torch${version:+==$version}" \
                || "$PY" -m pip install -q torch \
                || echo "setup: installing a CUDA torch FAILED"
            echo "setup: torch.cuda.is_available() -> $("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>&1 | tail -1)"
        fi
    fi
    "$PY" - "$WORK/env.json" <<'PYCODE'
import json, platform, subprocess, sys
env = {"python": platform.python_version()}
try:
    import torch
    env.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                   device_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported())
except Exception as error:
    env["torch_error"] = repr(error)
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                        "--format=csv,noheader"], capture_output=True, text=True,
                                       timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"))
print("setup: environment", json.dumps(env))
PYCODE
}
export -f setup_env

finalize() {
    "$PY" -c "$FINALIZE" "$JSON" accelerator="$ACC" size="$SIZE" steps="$STEPS" ctr_epochs="$CTR_EPOCHS" \
        precision="$PRECISION" ctr_precision="$CTR_PRECISION" budget_s="$BUDGET" \
        || echo "gpu_check: could not write $JSON" >&2
}

wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# step NAME KIND CAP_S COMMAND...  (KIND: setup | train | pytest | bench)
step() {
    local name=$1 kind=$2 cap=$3; shift 3
    wanted "$name" || return 0
    local shown=${SHOW:-}
    SHOW=""
    [ -n "$shown" ] || { shown=$(printf '%q ' "$@"); shown=${shown% }; }
    local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
    local limit=$(( cap < left ? cap : left ))
    local log="$LOGS/$name.log" run_dir="" mem_file=""
    case "$kind" in
        train) run_dir="$WORK/runs/$name"; mem_file="$WORK/runs/$name.mem.json" ;;
        setup) run_dir="$WORK/env.json" ;;
        bench) run_dir="$WORK/bench/bench.json" ;;
    esac
    if [ "$DRY_RUN" = 1 ]; then
        printf '[%s] timeout %ss: %s\n' "$name" "$cap" "$shown"
        return 0
    fi
    if (( limit < 20 )); then
        echo "gpu_check: $name skipped: ${left}s left of the ${BUDGET}s budget"
        "$PY" -c "$RECORD" "$name" "$kind" skipped "" "" "" "$shown" "" "" "" "budget: ${left}s left of ${BUDGET}s"
        finalize
        return 0
    fi
    echo "gpu_check: $name (timeout ${limit}s)"
    rm -rf "$run_dir" "$mem_file" 2>/dev/null
    local t0 ms rc status
    t0=$(date +%s%N)
    GPU_CHECK_MEM_FILE=$mem_file timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    case $rc in 0) status=passed ;; 124|137) status=timeout ;; *) status=failed ;; esac
    "$PY" -c "$RECORD" "$name" "$kind" "$status" "$rc" "$ms" "$limit" "$shown" "$log" \
        "$run_dir" "$mem_file" "" || echo "gpu_check: could not record $name" >&2
    finalize
    echo "gpu_check: $name $status (exit $rc, $(( ms / 1000 )) s)"
}

recbench() {  # recbench NAME CAP_S OVERRIDES...: one training run, in the wrapper
    local name=$1 cap=$2; shift 2
    # shellcheck disable=SC2206
    local args=("$@" $COMMON "hydra.run.dir=$WORK/runs/$name")
    SHOW="$PY -m recbench $(printf '%q ' "${args[@]}")"; SHOW=${SHOW% }
    step "$name" train "$cap" "$PY" -c "$WRAPPER" "${args[@]}"
}

ctr() {  # ctr MODEL CAP_S: recbench/bench/ctr.py's recbench_overrides(CTRSettings(), MODEL, "synthetic"), dense Adam
    local model=$1 cap=$2
    # shellcheck disable=SC2206
    local args=("model=$model" data=tmall data.source=synthetic seed=1 $CTR_DATA task=ctr
                task.heads.ctr.label=purchase model.net.embedding_dim=16 "model.net.mlp_hidden=[256,128]"
                "model.net.history_fields=[item,cat]" "loader.batch_size=$CTR_BATCH"
                "loader.eval_batch_size=$CTR_BATCH" optimizer.dense.lr=0.001 optimizer.sparse.lr=0.001
                optimizer.gradient_clip=10.0 "trainer.max_epochs=$CTR_EPOCHS"
                "early_stopping.patience=$((CTR_EPOCHS + 1))" model.net.sparse_embeddings=false
                "trainer.precision=$CTR_PRECISION")
    [ "$model" = din ] && args+=("model.net.attention_hidden=[64]")
    recbench "ctr_$model" "$cap" "${args[@]}"
}

paper() {  # paper NAME DATA CAP_S EXTRA...: a paper model for $STEPS steps in $PRECISION
    local model=$1 data=$2 cap=$3; shift 3
    # max_steps can end training inside an epoch, before its validation: EarlyStopping then checks
    # at validation ends only (its default check at the training epoch's end raises "Early stopping
    # conditioned on metric valid/... which is not available")
    recbench "$model" "$cap" "model=$model" "data=$data" "+trainer.max_steps=$STEPS" \
        "trainer.precision=$PRECISION" "+early_stopping.check_on_train_epoch_end=false" "$@"
}

# ---------------------------------------------------------------------------------------------- run
if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check (dry run): accelerator=$ACC size=$SIZE steps=$STEPS ctr_epochs=$CTR_EPOCHS" \
         "precision=$PRECISION ctr_precision=$CTR_PRECISION budget=${BUDGET}s"
    echo "would write: $JSON (logs: $LOGS, scratch: $WORK)"
    wanted setup && echo "[setup] timeout 240s: import recbench, lightning, hydra, polars, torchmetrics," \
         "pytest, sklearn || pip install -e '.[test]'$([ "$ACC" = gpu ] && echo "; torch.cuda.is_available()" \
         "|| pip install torch==<installed version> (CUDA build from PyPI, else download.pytorch.org/whl/cu128)")"
else
    mkdir -p "$WORK" "$LOGS" || exit 2
    : >"$WORK/steps.jsonl"
    finalize
fi

# No Python here yet beyond the interpreter itself: setup runs as its own bash under timeout.
if [ "$DRY_RUN" = 0 ] && wanted setup; then
    step setup setup 240 bash -c setup_env
fi

# The CPU DDP test does not need the GPU: it runs in the background beside the GPU steps.
DDP_PID=""
if wanted ddp_test; then
    if [ "$DRY_RUN" = 1 ]; then
        step ddp_test pytest 240 "$PY" -m pytest -x -q -p no:cacheprovider tests/test_ddp.py
    else
        step ddp_test pytest 240 "$PY" -m pytest -x -q -p no:cacheprovider tests/test_ddp.py &
        DDP_PID=$!
    fi
fi

ctr din 150
ctr deepfm 100
# shellcheck disable=SC2086
paper a2gen tmall 120 $TMALL
# shellcheck disable=SC2086
paper moment_cross kuailive 120 $KUAILIVE
# shellcheck disable=SC2086
paper llm_alignment kuailive 150 $KUAILIVE $TEXT
# shellcheck disable=SC2086
paper lcu kuaicomt 150 $KUAICOMT $TEXT
# tests/test_ddp.py's tiny MMoE run, through Lightning's DDP strategy on one device
recbench ddp_gpu1 90 trainer=ddp data=tmall model=mmoe data.replica.n_users=150 data.replica.n_items=1500 \
    data.replica.episodes_per_user=15 trainer.max_epochs=1
if [ "$FUXICTR" = 1 ]; then
    step fuxictr_ctr bench 3600 "$PY" -m recbench.bench --only ctr --out "$WORK/bench/bench.json"
fi

if [ -n "$DDP_PID" ]; then
    echo "gpu_check: waiting for ddp_test"
    wait "$DDP_PID"
fi
if [ "$DRY_RUN" = 1 ]; then
    exit 0
fi
finalize
echo "gpu_check: $(( $(date +%s) - START )) s; figures: $JSON"
"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("gpu_check:", d["summary"]); sys.exit(0 if d["ok"] else 1)' "$JSON"
