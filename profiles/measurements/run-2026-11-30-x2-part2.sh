#!/usr/bin/env bash
# Second device call (2026-11-30, nvidia-h200-x2): the fsdp-x2 scenarios the first call had no time for
# (see run-2026-11-30-x2.sh); appended to the same results file when committed.
set -u
log="$OUT/log.txt"
nvidia-smi -L | tee -a "$log"
timeout 560 python3 -m planner.cli measure --suite fsdp-x2 --out "$OUT/fsdp-x2.jsonl" --timeout 250 \
  --only fsdp2-llama-2-70b-r16-s4096-b1-cap48 fsdp2-llama-2-70b-r16-s8192-b1-cap48 \
         fsdp2-llama-2-70b-r16-s1024-b1-cap24-offload --log "$log" 2>&1 | tail -12
