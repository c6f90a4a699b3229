#!/usr/bin/env bash
# One GPU check for a fresh machine without network, in under 8 minutes: the training
# throughput table, a ~60-second end-to-end train on a synthetic Market-sized set with
# validations, the evaluation and re-ranking benchmark at Market size, and the ONNX/inference
# benchmark. Run it from the repository root:
#
#   bash benchmarks/gpu_check.sh            # tables in $OUT (when set) or ./gpu_check_out
#
# The machine needs PyTorch, torchvision, onnx, onnxruntime (and numpy, pillow, matplotlib,
# typer, rich, pyyaml, tensorboard). reidnet's other dependencies (pydantic and its three
# helpers) come as wheels in .whl/ (see docs/BENCHMARKS.md, "Running the GPU check"); reidnet
# itself runs from src/ without being installed. Each step has its own time limit, shortened
# when the overall deadline is near; a step that fails or runs out of time is reported and the
# next one runs. SMOKE=1 runs every step with tiny sizes on any machine, the CPU included (to
# check the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
RESULTS=${OUT:-$PWD/gpu_check_out}
WORK=$(mktemp -d /tmp/reidnet_gpu_check.XXXXXX)
DEADLINE_S=${DEADLINE_S:-465}  # the whole script, setup included
SMOKE=${SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu
    THROUGHPUT=(--tiny --batches 32 --identities 24 --min-images 64)
    SYNTH=(--identities 30 --test-identities 8 --images-per-identity 8 --size 64x32 --workers 2)
    TRAIN=(model.backbone=resnet_18 model.input_height=64 model.input_width=32
        dataset.batch_size=32 train.num_epochs=2 train.validation_interval=1)
    EVAL=(--device cpu --quick --skip-classic-rerank --dims 64)
else
    DEVICE=cuda
    # 751 identities: the classifier of the 60-second train has the same shape, so that
    # train's batch-128 compilation finds inductor's cache warm.
    THROUGHPUT=(--identities 751 --images-per-identity 8)
    SYNTH=(--identities 851 --test-identities 100 --images-per-identity 17 --size 256x128
        --workers 16)
    TRAIN=(dataset.batch_size=128 train.num_epochs=8 train.validation_interval=4)
    EVAL=(--device cuda --skip-classic-rerank --dims 256)
fi
START=$(date +%s)
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
SUMMARY="$RESULTS/summary.md"
: >"$LOG"
: >"$SUMMARY"

say() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - START)); }

# run_step NAME LIMIT_S COMMAND...: run with the smaller of LIMIT_S and the time left.
run_step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE_S - $(elapsed)))
    ((limit > left)) && limit=$left
    if ((left < 15)); then
        say "## $name: skipped (deadline reached at $(elapsed) s)"
        echo "* $name: skipped, no time left" >>"$SUMMARY"
        return 1
    fi
    say "## $name (limit ${limit} s, started at $(elapsed) s)"
    local began status
    began=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    status=${PIPESTATUS[0]}
    local took=$(($(date +%s) - began))
    local verdict="ok"
    ((status == 124)) && verdict="stopped at its ${limit} s limit"
    ((status != 0 && status != 124)) && verdict="failed (exit $status)"
    say "## $name: $verdict after ${took} s"
    echo "* $name: $verdict, ${took} s" >>"$SUMMARY"
    return "$status"
}

# -- environment ---------------------------------------------------------------------------
if ! "$PYTHON" -c "import pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl 2>&1 |
        tail -n 3 | tee -a "$LOG"
    export PYTHONPATH="$WORK/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 |
    tee "$RESULTS/gpu.txt" | tee -a "$LOG"
if ! "$PYTHON" -c "import pydantic, torch, reidnet.config
assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" 2>&1 | tee -a "$LOG"; then
    say "reidnet cannot be imported or CUDA is not available: bring the wheels (.whl/) and a GPU"
    exit 1
fi
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$LOG" "$RESULTS/environment.txt"
import os, platform, torch, torchvision
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"GPU: {gpu}, {os.cpu_count()} CPU cores, python "
      f"{platform.python_version()}, torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF
{
    echo "# reidnet GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    cat "$RESULTS/environment.txt"
    echo
} >>"$SUMMARY"

# -- 1. training throughput: reference-style pipeline against reidnet's ---------------------
run_step "training throughput" 215 "$PYTHON" benchmarks/train_throughput.py \
    --device "$DEVICE" "${THROUGHPUT[@]}" --out "$RESULTS/train_throughput.md"

# -- 2. ~60-second train on a synthetic Market-sized training set, with validations ----------
DATA="$WORK/market_sized"
run_step "synthetic Market-sized data" 60 "$PYTHON" -m reidnet dataset synth "$DATA" \
    --cameras 6 "${SYNTH[@]}"
run_step "60-second train" 140 "$PYTHON" -m reidnet train -e configs/market1501_resnet50.yaml \
    results_dir="$WORK/results" model.pretrain_choice=none \
    dataset.train_dataset_dir="$DATA/bounding_box_train" \
    dataset.test_dataset_dir="$DATA/bounding_box_test" dataset.query_dataset_dir="$DATA/query" \
    dataset.num_workers=16 train.checkpoint_interval=100 "${TRAIN[@]}"
if [[ -f "$WORK/results/train/metrics.jsonl" ]]; then
    cp "$WORK/results/train/metrics.jsonl" "$RESULTS/train_60s_metrics.jsonl"
    "$PYTHON" - "$WORK/results/train/metrics.jsonl" <<'EOF' | tee -a "$LOG" "$RESULTS/train_60s.md"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
print("| epoch | images/s | seconds | loss | mAP | rank-1 |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for r in lines:
    v = r.get("validation") or {}
    mAP = f"{v['mAP']:.4f}" if v else ""
    rank1 = f"{v['rank-1']:.4f}" if v else ""
    print(f"| {r['epoch']} | {r['images_per_second']:,.0f} | {r['seconds']:.1f} | "
          f"{r['loss_total']:.3f} | {mAP} | {rank1} |")
steady = [r["images_per_second"] for r in lines[1:]]
if steady:
    print(f"\nsteady-state (epochs 2+): {sum(steady) / len(steady):,.0f} images/s; "
          f"epoch 1 includes torch.compile and the decode of the training set")
EOF
fi

# -- 3. evaluation and re-ranking at Market size ----------------------------------------------
if [[ -f benchmarks/eval_speed.py ]]; then
    run_step "evaluation and re-ranking (Market size)" 75 "$PYTHON" benchmarks/eval_speed.py \
        "${EVAL[@]}" | tee "$RESULTS/eval_speed.txt"
else
    say "## evaluation benchmark: benchmarks/eval_speed.py is absent, skipped"
fi

# -- 4. ONNX / inference ------------------------------------------------------------------------
if [[ -f benchmarks/inference_speed.py ]]; then
    run_step "ONNX and inference" 75 "$PYTHON" benchmarks/inference_speed.py --quick |
        tee "$RESULTS/inference_speed.txt"
else
    say "## inference benchmark: benchmarks/inference_speed.py is absent, skipped"
fi

# -- summary --------------------------------------------------------------------------------
{
    echo
    echo "## Training throughput"
    cat "$RESULTS/train_throughput.md" 2>/dev/null || echo "(not produced)"
    echo
    echo "## End-to-end train: $(ls "$DATA/bounding_box_train" 2>/dev/null | wc -l) synthetic \
training images, configs/market1501_resnet50.yaml with ${TRAIN[*]}"
    cat "$RESULTS/train_60s.md" 2>/dev/null || echo "(not produced)"
    echo
    echo "total: $(elapsed) s"
} >>"$SUMMARY"
cat "$SUMMARY"
rm -rf "$WORK"
