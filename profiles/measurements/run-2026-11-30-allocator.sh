#!/usr/bin/env bash
# One device call (2026-11-30, H200): paged-residency-h200.json, core-expandable-h200.jsonl (core scenarios under
# PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True) and core-default-h200.jsonl (default allocator, for
# comparison with the H100 runs of the same scenarios). Run from the repo root on the GPU machine after
# installing the wheels; writes everything under $OUT.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "paged optimizer state: resident bytes against tensor bytes"
timeout 60 python3 -m planner.measure.paged "$OUT/paged-residency-h200.json" 2>&1 | grep -v Warning | tail -8 | tee -a "$log"

step "default allocator, a scenario the H100 measured"
timeout 60 python3 -m planner.cli measure --suite core --only mistral-7b-r8-s2048-b8-adamw_8bit \
  --out "$OUT/core-default-h200.jsonl" --timeout 55 --log "$log" 2>&1 | tail -3 | tee -a "$log"

step "expandable segments"
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 440 python3 -m planner.cli measure --suite core --only \
  llama-2-7b-r16-s1024-b4-adamw_torch mistral-7b-r8-s2048-b8-adamw_8bit llama-2-13b-r16-s4096-b2-paged8 \
  llama-3.1-8b-r16-s2048-b4-eager mistral-7b-r16-s4096-b2-paged8 llama-3.1-8b-r16-s8192-b1-paged8 \
  qwen2.5-7b-r64-s4096-b1 llama-2-7b-r64-s4096-b1 llama-2-7b-r64-s2048-b1 llama-2-7b-r64-s2048-b1-nogc \
  mistral-7b-r64-s8192-b1 llama-2-7b-r128-s2048-b2-adamw_8bit \
  --out "$OUT/core-expandable-h200.jsonl" --timeout 100 --stop-after 400 --log "$log" 2>&1 | tail -14 | tee -a "$log"
