#!/usr/bin/env bash
# The GPU benches as one command, for a short GPU slot (about 9 minutes on one H100/H200):
#
#   bench/gpu.sh              # on a GPU machine: JSON under bench/results/gpu/, a summary last
#   bench/gpu.sh --dry-run    # every part at toy size on the CPU, JSON in a temporary folder
#   bench/gpu.sh --out DIR    # the JSON (and logs/) in DIR instead
#
# Parts, in order, each under its own time cap (`timeout`; a part cut short keeps the JSON
# it has written so far): knowledge throughput by batch size 1..256 in bf16 with the default
# LLM; SeRALM's alignment rows and async against sync; RecSysLLM against SFT; faiss-gpu
# against faiss-cpu on 10^6 synthetic items. docs/gpu.md says what each figure is.
#
# It downloads nothing: HF_HUB_OFFLINE and PIP_NO_INDEX are set, and it checks first that
# what it needs is already on the machine (it travels with the working tree or is built
# from the project's files): a Python ($PYTHON, else `python`) with the project installed
# (`pip install -e ".[gpu]"` for faiss-gpu; without it the faiss part measures the CPU
# only and says so), the default LLM and text encoder (`streamrec assets fetch`) and
# MovieLens-100K (`streamrec data fetch ml-100k`) in the cache (STREAMREC_CACHE_DIR, or
# the asset paths of deploy/docker/Dockerfile.gpu). It only reads the GPU's state with
# nvidia-smi: it never resets or reconfigures the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (--dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
PYTHON="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU found:"
    nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader
    gpu=1
else
    echo "no GPU found (nvidia-smi is missing or lists no device)"
    gpu=0
fi
if [ "$dry" = 0 ] && [ "$gpu" = 0 ]; then
    echo "nothing measured: this is for a GPU machine (bench/gpu.sh --dry-run checks every part on the CPU)"
    exit 0
fi

if [ "$dry" = 1 ]; then
    out="${out:-$(mktemp -d -t streamrec-gpu-dry.XXXXXX)}"
    export CUDA_VISIBLE_DEVICES=""  # the CPU, even on a GPU machine
    # Toy sizes: each part starts, runs a step and writes its JSON.
    knowledge=(--batch-sizes 1 2 --items 2 --max-new-tokens 4)
    alignment=(--seeds 0 --iterations 2 --refresh 1 --speed-iterations 1 --batch-size 1
               --max-new-tokens 4 --max-examples 64 --pretrain-epochs 1 --eval-users 2
               --popular-items 0 --regenerate-batch-size 4 --threads 1 --write-every 1)
    recsysllm=(--users 2 --steps 1 --eval-users 1 --rank-users 2)
    # The variants in sync: each async run starts a generator process (a model load);
    # the speed row still runs one of each.
    export STREAMREC_ALIGNMENT__MODE=sync
    export STREAMREC_RECSYSLLM__BATCH_SIZE=1  # batch 8 of its long prompts takes gigabytes
    # Short prompts (3 history items, not 20) and 2 beams: the real LLM scoring 20
    # candidates after a 20-item history took minutes of a core per user.
    export STREAMREC_RECSYSLLM__PROMPT_ITEMS=3 STREAMREC_RECSYSLLM__BEAMS=2
    faiss=(--items 10000 --queries 64 --single 10)
    caps=(300 600 600 120)  # generous: a busy shared CPU is slow; the GPU caps are below
else
    out="${out:-bench/results/gpu}"
    knowledge=(--batch-sizes 1 2 4 8 16 32 64 128 256 --items 4)
    # Guesses of what fits (never measured on a GPU): each part's JSON says what ran, and a
    # part cut at its cap keeps what it wrote (alignment: seralm first, then the others).
    # All 943 test users; the needed items' not-aligned knowledge written here first.
    alignment=(--seeds 0 --iterations 25 --refresh 5 --speed-iterations 10 --batch-size 8
               --max-new-tokens 48 --pretrain-epochs 10 --eval-users 0 --popular-items 300
               --regenerate-batch-size 128 --write-every 5)
    # Every task on 50 users; candidate ranking (HR@1 among 20) on 600 (of 943).
    recsysllm=(--users 200 --steps 200 --eval-users 50 --rank-users 600)
    faiss=(--items 1000000 --queries 1024 --single 200)
    caps=(80 210 180 50)
fi
mkdir -p "$out/logs"
work="$(mktemp -d -t streamrec-gpu-work.XXXXXX)"
echo "results in $out (logs in $out/logs)"

"$PYTHON" -m bench.gpu_check $([ "$dry" = 1 ] && echo --cpu) || exit 1

names=()
part() {  # part NAME CAP_S ARGS...: one bench under its cap; its status for the summary
    local name="$1" cap="$2"
    shift 2
    local started
    started=$(date +%s)
    echo "== $name (at most ${cap}s)"
    timeout --signal=TERM --kill-after=15 "$cap" "$PYTHON" -m "bench.$name" \
        --json "$out/$name.json" "$@" >"$out/logs/$name.log" 2>&1
    local rc=$?
    local took=$(($(date +%s) - started))
    [ "$rc" = 124 ] && echo "   cut at its cap after ${took}s (its JSON keeps what it wrote)" \
        || echo "   exit $rc after ${took}s"
    [ "$rc" != 0 ] && [ "$rc" != 124 ] && tail -n 5 "$out/logs/$name.log"
    names+=("$name:$rc:$took")
}

if [ "$dry" = 1 ]; then
    part knowledge "${caps[0]}" "${knowledge[@]}" --devices cpu --threads 1
else
    STREAMREC_KNOWLEDGE__DTYPE=bfloat16 part knowledge "${caps[0]}" "${knowledge[@]}" --devices cuda
fi
part alignment "${caps[1]}" "${alignment[@]}" --na-items-here --na-dir "$work/na-knowledge"
part recsysllm "${caps[2]}" "${recsysllm[@]}"
part faiss_gpu "${caps[3]}" "${faiss[@]}"
rm -rf "$work"

"$PYTHON" -m bench.gpu_summary "$out" "${names[@]}" $([ "$dry" = 1 ] && echo --dry-run)
