#!/usr/bin/env bash
# One device call (2026-11-30, H200): recommender-check-2-h200.jsonl, the plans qplan recommends after the
# model fixes of that day (profiles/suites/recommender-check.json) under card-sized caps, and the GPU tests.
# Run from the repo root on the GPU machine after installing the wheels; writes everything under $OUT.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "recommender check: two recommended plans under their card's cap, and seq_len doubled"
timeout 420 python3 -m planner.cli measure --suite profiles/suites/recommender-check.json \
  --out "$OUT/recommender-check-2-h200.jsonl" --timeout 150 --log "$log" 2>&1 | tail -10 | tee -a "$log"

step "GPU tests"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_measure_gpu.py tests/test_callback.py \
  > "$OUT/gpu-tests.log" 2>&1; echo "exit $?" >> "$OUT/gpu-tests.log"
tail -3 "$OUT/gpu-tests.log" | tee -a "$log"
