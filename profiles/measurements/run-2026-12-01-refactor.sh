#!/usr/bin/env bash
# One device call (2026-12-01, H200) after the layout change (issue 13): the GPU tests on the refactored tree,
# and the history scenarios the first call of the day did not reach (Qwen2.5-0.5B at micro-batch 4 with
# expandable segments, Qwen2.5-0.5B at 16k tokens under both allocators) plus Gemma-2-2B asked for sdpa
# (what transformers 5.17 does with it). Run from the repo root after installing the wheels.
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }
hist=/tmp/histories
mkdir -p "$hist"

step "versions"
python3 -c "import torch, transformers, peft, bitsandbytes; print(torch.__version__, transformers.__version__, peft.__version__, bitsandbytes.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"
step "history scenarios not reached before"
timeout 170 python3 -m planner.cli measure --suite new-families --only qwen2.5-0.5b-r16-s2048-b4-exp \
  qwen2.5-0.5b-r16-s16384-b1 qwen2.5-0.5b-r16-s16384-b1-exp gemma-2-2b-r16-s2048-b1-sdpa --history-dir "$hist" \
  --out "$OUT/new-families-h200-part3.jsonl" --timeout 80 --stop-after 130 --log "$log" 2>&1 | tail -8 | tee -a "$log"
step "GPU tests"
timeout 170 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_measure_gpu.py tests/test_callback.py \
  > "$OUT/gpu-tests.log" 2>&1; echo "exit $?" >> "$OUT/gpu-tests.log"
tail -3 "$OUT/gpu-tests.log" | tee -a "$log"
step "pack"
ls -l "$hist" | tee -a "$log"
tar cf "$OUT/histories-part3.tar" -C /tmp histories
ls -l "$OUT" | tee -a "$log"
