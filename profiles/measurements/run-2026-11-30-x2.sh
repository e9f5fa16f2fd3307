#!/usr/bin/env bash
# One device call (2026-11-30, nvidia-h200-x2): what produced fsdp-x2-h200.jsonl. Run from the repo root on
# the two-GPU machine after installing the wheels (see examples/README.md); writes everything under $OUT.
set -u
log="$OUT/log.txt"
nvidia-smi -L | tee -a "$log"
timeout 560 python3 -m planner.cli measure --suite fsdp-x2 --out "$OUT/fsdp-x2.jsonl" --timeout 200 \
  --stop-after 420 --log "$log" 2>&1 | tail -12
