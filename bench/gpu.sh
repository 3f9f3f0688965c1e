#!/usr/bin/env bash
# Every CUDA check and GPU benchmark row of BENCHMARKS.md in one call of a lent GPU machine, in under 8
# minutes, so that a device is used in one go rather than explored. Prepare here (the corpus is data:
# git-ignored, carried with the call, never committed):
#
#     mkdir -p bench/data && cp ../shared/corpora/tinyshakespeare.txt bench/data/
#
# then, through the device tool: command `bash bench/gpu.sh`, carry ["bench/data"], timeout_s 600.
# Each step's log goes to $OUT (which the device tool brings back), or to bench/results/gpu by hand;
# a step that fails or overruns its limit is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
corpus=${1:-bench/data/tinyshakespeare.txt}
runs="$out/runs"
mkdir -p "$runs"
export PYTHONUNBUFFERED=1
py=python3

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log it, say how it ended
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local code=$?
    tail -n 15 "$out/$name.log"
    echo "== $name: exit $code"
}

[ -f "$corpus" ] || { echo "no corpus at $corpus: see the top of bench/gpu.sh" >&2; exit 1; }
step environment 20 bash -c "nvidia-smi; $py -c 'import torch; print(torch.__version__, \"CUDA\", torch.version.cuda,
\"cuDNN\", torch.backends.cudnn.version(), torch.cuda.get_device_name(0), \"NCCL\", torch.cuda.nccl.version())'"
# The model, kernel and gradient tests under this machine's torch (CI runs the whole suite on CPUs).
step tests 100 $py -m pytest -q -x -m "not slow" tests/test_model.py tests/test_fastpaths.py tests/test_gradients.py
# Training with mixed precision (auto = bf16/fp16 autocast on CUDA) and cuDNN's GRU, 45 s each: automatic
# sizing (its probe on the GPU: the "sizing:" line, which must pick a larger model than on a CPU), the fixed
# defaults, then a size a GPU can afford; their validation figures are the GPU rows of the quality table.
step train-sized 70 $py cli.py train "$corpus" --checkpoint "$runs/sized" --max-time 45 --device cuda
grep -h "sizing:" "$out/train-sized.log"
step train-default 70 $py cli.py train "$corpus" --checkpoint "$runs/default" --max-time 45 --device cuda \
    --sizing fixed
step train-large 70 $py cli.py train "$corpus" --checkpoint "$runs/large" --max-time 45 --device cuda \
    --hidden 1024 --layers 3 --batch-size 128
step train-fp32 70 $py cli.py train "$corpus" --checkpoint "$runs/fp32" --max-time 45 --device cuda \
    --precision fp32 --sizing fixed
# Data-parallel training over NCCL (one GPU: one process, which still goes through NCCL and DDP).
step ddp-nccl 60 torchrun --standalone --nproc_per_node=1 -m chargen train "$corpus" --checkpoint "$runs/ddp" \
    --max-steps 300 --device cuda --sizing fixed
# Sampling from the large run (the sampler is numpy on the CPU: the run's weights are copied there), timed;
# and the series head on CUDA.
step sample 45 bash -c "time $py cli.py generate --checkpoint $runs/large --length 20000 --seed ROMEO: >/dev/null"
step series 45 $py cli.py series train --synthetic noisy-sine --checkpoint "$runs/sine" --device cuda
# The classifier head on CUDA with mixed precision (whole texts, padded batches; a time budget, so its sizing
# probe times CUDA steps), then read back on the CPU (eval, and inspect's split of the logits). The step
# limits add up to 595 s.
step classify 45 bash -c "$py cli.py classify train examples/reviews.csv --text review --label sentiment \
    --checkpoint $runs/sent --max-time 15s --device cuda && $py cli.py classify eval --checkpoint $runs/sent \
    examples/reviews_held_out.csv && printf 'What a wonderful film.' > $out/review.txt && \
    $py cli.py inspect --checkpoint $runs/sent $out/review.txt"
echo "logs in $out"
