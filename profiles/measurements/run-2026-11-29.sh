#!/usr/bin/env bash
# One device call (2026-11-29, H200): what produced recommender-check-h200.jsonl, saved-tensors-h200.json,
# examples/regress/gc-{on,off}.json and examples/train_qlora-llama-2-7b.log. Run from the repo root on the
# GPU machine after installing the wheels (see examples/README.md); writes everything under $OUT.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "recommender check: two recommended plans under their card's cap, and seq_len doubled"
timeout 240 python3 -m planner.cli measure --suite profiles/suites/recommender-check.json \
  --out "$OUT/recommender-check.jsonl" --timeout 120 --log "$log" 2>&1 | tail -8 | tee -a "$log"

step "train_qlora.py with QPlanCallback on a 7B"
mkdir -p "$OUT/train"
timeout 120 python3 examples/train_qlora.py --model llama-2-7b --steps 4 --seq-len 1024 --batch 1 --rank 16 \
  --output-dir /tmp/train > "$OUT/train/train.log" 2>&1; echo "exit $?" >> "$OUT/train/train.log"
cp /tmp/train/qplan_memory.json "$OUT/train/" 2>/dev/null

step "regress example: gradient checkpointing on (base) and off (new)"
for side in on off; do
  timeout 100 python3 -m planner.cli regress run --suite "examples/regress/suite-gc-$side.json" \
    --out "$OUT/gc-$side.json" --timeout 80 --log "$log" 2>&1 | tail -4 | tee -a "$log"
done

step "saved-for-backward tensors per layer on the GPU"
timeout 120 python3 -m planner.measure.saved "$OUT/saved-tensors.json" 2>&1 | grep -v Warning | tail -8 | tee -a "$log"

step "GPU tests"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_measure_gpu.py tests/test_callback.py \
  > "$OUT/gpu-tests.log" 2>&1; echo "exit $?" >> "$OUT/gpu-tests.log"
tail -3 "$OUT/gpu-tests.log" | tee -a "$log"
step done
