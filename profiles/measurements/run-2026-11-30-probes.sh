#!/usr/bin/env bash
# One device call (2026-11-30, H200): paged-residency-h200.json, timeline-h200.json and core-missing-h200.jsonl.
# Run from the repo root on the GPU machine after installing the wheels; writes everything under $OUT.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "paged optimizer state: resident bytes against tensor bytes"
timeout 150 python3 -m planner.measure.paged "$OUT/paged-residency-h200.json" 2>&1 | grep -v Warning | tail -30 | tee -a "$log"

step "allocator timeline of one micro-step, two-layer models"
timeout 240 python3 -m planner.measure.timeline "$OUT/timeline-h200.json" 2>&1 | grep -v Warning | tail -12 | tee -a "$log"

step "the three core scenarios the H100 runs did not reach"
timeout 170 python3 -m planner.cli measure --suite core --only llama-2-13b-r16-s4096-b2-paged8 \
  qwen2.5-14b-r16-s2048-b1-paged8 qwen2.5-14b-r64-s1024-b2-adamw_torch \
  --out "$OUT/core-missing-h200.jsonl" --timeout 150 --stop-after 160 --log "$log" 2>&1 | tail -6 | tee -a "$log"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee -a "$log"
