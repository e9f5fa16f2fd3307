#!/usr/bin/env bash
# Device calls (2026-12-01, H200) for issue 11: profiles/suites/new-families.json, with the caching allocator's
# whole history recorded (qplan measure --history-dir) for the history set under both allocator settings.
#   part 1: the 10 history scenarios, default allocator, then their -exp twins (expandable segments)
#   part 2: the rest of the suite (histories recorded too)
# Run from the repo root after installing the wheels: bash profiles/measurements/run-2026-12-01-histories.sh 1|2
set -u
part=${1:-1}
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }
out="$OUT/new-families-h200-part$part.jsonl"
hist=/tmp/histories
mkdir -p "$hist"
names() { python3 -c "import json,sys; s=json.load(open('profiles/suites/new-families.json'))['scenarios']; print(' '.join(x['name'] for x in s[int(sys.argv[1]):int(sys.argv[2])]))" "$@"; }
measure() {  # seconds-limit stop-after names...
  local limit=$1 stop=$2; shift 2
  timeout "$limit" python3 -m planner.cli measure --suite new-families --only "$@" --history-dir "$hist" \
    --out "$out" --append --timeout 150 --stop-after "$stop" --log "$log" 2>&1 | tail -14 | tee -a "$log"
}

step "versions"
python3 -c "import torch, transformers, peft, bitsandbytes; print(torch.__version__, transformers.__version__, peft.__version__, bitsandbytes.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"
if [ "$part" = 1 ]; then
  step "history set, default allocator"
  measure 235 190 $(names 0 10)
  step "history set, expandable segments"
  measure 235 190 $(names 10 20)
else
  step "the rest of the suite"
  measure 420 360 $(names 20 99)
fi
step "pack"
ls -l "$hist" | tee -a "$log"
tar cf - -C /tmp histories | split -b 15M -d - "$OUT/histories-part$part.tar."
ls -l "$OUT" | tee -a "$log"
