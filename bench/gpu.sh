#!/usr/bin/env bash
# The GPU figures of docs/performance.md: fiber-rs on CUDA next to the PyTorch reference on the
# same GPU. Parts (all by default, in this order):
#   base-f32, base-bf16  the base model at batch 16, with the reference
#   tiny                 the tiny model at batch 32, with the reference
#   losses               the pre-training loss curve on the built-in data in f32 and in bf16
#                        (f32 master weights), side by side
#   phases               where the base step's time goes: forward, backward and update timed
#                        separately (the device synchronised between them), in f32 and bf16
# Needs a binary built with `cargo build --release -p xtask --features cuda`, Python with torch,
# and the CUDA libraries on LD_LIBRARY_PATH. Each part writes its JSON and text into OUTPUT_DIR;
# a part that fails is named at the end (exit status 1) and the parts after it still run.
#
#   bench/gpu.sh [XTASK_BINARY] [OUTPUT_DIR] [PART ...]
set -euo pipefail
bin=${1:-target/release/xtask}
out=${2:-bench-results}
shift $(( $# < 2 ? $# : 2 ))
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(base-f32 base-bf16 tiny losses phases)
for part in "${parts[@]}"; do
    case "$part" in
    base-f32 | base-bf16 | tiny | losses | phases) ;;
    *)
        echo "unknown part \`$part\`; expected base-f32, base-bf16, tiny, losses or phases" >&2
        exit 2
        ;;
    esac
done
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
# One part: its commands' output is kept in OUTPUT_DIR; it stops at its first failing command
# (`set -e` does not apply in a function called as a condition, hence the explicit returns), and
# a failed part is reported, not fatal, so the parts after it still run.
run_part() {
    local part=$1
    case "$part" in
    base-f32 | base-bf16)
        local precision=${part#base-}
        "$bin" bench --preset base --backend cuda --precision "$precision" --batch 16 --warmup 2 \
            --reps 5 --reference --json "$out/$part.json" 2>&1 | tee "$out/$part.txt" || return 1
        ;;
    tiny)
        "$bin" bench --preset tiny --backend cuda --warmup 3 --reps 10 --reference \
            --json "$out/tiny-f32.json" 2>&1 | tee "$out/tiny-f32.txt" || return 1
        ;;
    losses)
        local precision
        for precision in f32 bf16; do
            "$bin" train --stage coarse --backend cuda --precision "$precision" \
                --name "precision-$precision" --runs "$out/runs" 2>&1 | tee "$out/train-$precision.txt" || return 1
        done
        python3 "$(dirname "$0")/compare_losses.py" "$out/runs/precision-f32" \
            "$out/runs/precision-bf16" --block 30 | tee "$out/losses.md" || return 1
        ;;
    phases)
        local precision
        for precision in f32 bf16; do
            "$bin" bench --preset base --backend cuda --precision "$precision" --batch 16 \
                --only step --phases --warmup 2 --reps 3 --reference \
                --json "$out/phases-$precision.json" 2>&1 | tee "$out/phases-$precision.txt" || return 1
        done
        ;;
    esac
}
failed=()
for part in "${parts[@]}"; do
    if ! run_part "$part"; then
        echo "part $part FAILED (its output is in $out)" >&2
        failed+=("$part")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed parts: ${failed[*]}" >&2
    exit 1
fi
