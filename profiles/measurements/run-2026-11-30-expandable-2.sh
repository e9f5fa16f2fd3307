#!/usr/bin/env bash
# One device call (2026-11-30, H200): expandable-2-h200.jsonl, more runs under
# PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (a 70B, 13-14B, no checkpointing, 1B and 3B models), so the
# expandable-segments slack terms are fitted across model sizes. Run from the repo root after installing the wheels.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }
out="$OUT/expandable-2-h200.jsonl"

step "core scenarios under expandable segments"
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 330 python3 -m planner.cli measure --suite core --only \
  llama-2-70b-r16-s2048-b1-paged8 llama-2-13b-r64-s2048-b1 qwen2.5-14b-r16-s2048-b1-paged8 \
  llama-2-7b-r32-s256-b8-nogc-paged8 llama-3.1-8b-r16-s1024-b1-nogc-adamw_torch \
  --out "$out" --timeout 150 --stop-after 280 --log "$log" 2>&1 | tail -7 | tee -a "$log"

step "small models with the setting in their own scenario"
timeout 70 python3 -m planner.cli measure --model llama-3.2-1b --seq-len 2048 --rank 16 --expandable-segments \
  --name llama-3.2-1b-r16-s2048-b1-expandable --out "$out" --append --timeout 60 --log "$log" 2>&1 | tail -2 | tee -a "$log"
timeout 80 python3 -m planner.cli measure --model llama-3.2-3b --seq-len 4096 --batch 2 --rank 32 --expandable-segments \
  --name llama-3.2-3b-r32-s4096-b2-expandable --out "$out" --append --timeout 70 --log "$log" 2>&1 | tail -2 | tee -a "$log"
