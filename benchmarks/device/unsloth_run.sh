#!/usr/bin/env bash
# On the device, from the repo root, with the unsloth pack carried (unsloth_pack.sh; carry [".gpu_unsloth"]):
#
#   bash benchmarks/device/unsloth_run.sh [1b|8b|toy]     (default 1b; toy: a CPU check)
#
# bench_train_gpu.py's whole runs, each variant its own invocation (a fresh process each), on the pack's shards:
# $OUT/train_<shape>_<variant>.json per variant, all their output in $OUT/train_<shape>.log, unsloth's import on
# the image in $OUT/unsloth_import.txt, then the x trl table. A variant gets at most CAP seconds (1b 170, 8b 200)
# and is skipped when less than MIN (60) are left of BUDGET (570) for the whole script. $OUT gets 2 files + one JSON
# per variant, and the device returns at most 8: keep VARIANTS to 6 or fewer.
# Env: VARIANTS ("trl_liger_flex unsloth dataprep"), STEPS (1b "--warmup 3 --run-steps 15", 8b "--warmup 2
#      --run-steps 8"), CAP, MIN, BUDGET, PACK (.gpu_unsloth), PY (python3), SITE (/tmp/site),
#      USITE (/tmp/site_unsloth), D (/tmp/D), OUT (benchmarks/out/device when unset).
set -uo pipefail
SHAPE=${1:-1b}
case $SHAPE in
  1b) STEPS=${STEPS:---warmup 3 --run-steps 15} CAP=${CAP:-170} ;;
  8b) STEPS=${STEPS:---warmup 2 --run-steps 8} CAP=${CAP:-200} ;;
  toy) STEPS=${STEPS:---warmup 1 --run-steps 3} CAP=${CAP:-170} ;;
  *) echo "usage: bash benchmarks/device/unsloth_run.sh [1b|8b|toy]" >&2; exit 2 ;;
esac
VARIANTS=${VARIANTS:-trl_liger_flex unsloth dataprep} BUDGET=${BUDGET:-570} MIN=${MIN:-60}
PACK=${PACK:-.gpu_unsloth} PY=${PY:-python3} SITE=${SITE:-/tmp/site} USITE=${USITE:-/tmp/site_unsloth} D=${D:-/tmp/D}
OUT=${OUT:-benchmarks/out/device}
mkdir -p "$OUT"
rm -rf "$SITE" "$USITE" "$D" && mkdir -p "$SITE" "$USITE" "$D"
tar -xJf "$PACK/site.tar.xz" -C "$SITE" && tar -xJf "$PACK/site_unsloth.tar.xz" -C "$USITE" &&
  tar -xJf "$PACK/data.tar.xz" -C "$D" || exit 1
export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1
log=$OUT/train_$SHAPE.log
echo "unpacked in $SECONDS s; shape $SHAPE; variants $VARIANTS; $STEPS" | tee "$log"

# unsloth's import as its run sees it (its tree first), and where each package came from
if [[ " $VARIANTS " == *" unsloth "* ]]; then
  PYTHONPATH=$USITE:$PYTHONPATH timeout 120 "$PY" -c 'import unsloth, trl, datasets, bitsandbytes, transformers, torch
for m in (unsloth, trl, datasets, bitsandbytes, transformers, torch): print(m.__name__, m.__version__, m.__file__)' \
    >"$OUT/unsloth_import.txt" 2>&1
  echo "unsloth import: exit $?, $(tail -n 6 "$OUT/unsloth_import.txt")" | tee -a "$log"
fi

for v in $VARIANTS; do
  left=$(( BUDGET - SECONDS ))
  if (( left < MIN )); then echo "== $v: skipped, $left s left of $BUDGET" | tee -a "$log"; continue; fi
  cap=$(( CAP < left - 10 ? CAP : left - 10 ))
  echo "== $v (at most $cap s)" | tee -a "$log"
  rm -f "$OUT/train_${SHAPE}_$v.json"
  # shellcheck disable=SC2086  # STEPS holds several options
  timeout -k 5 "$cap" "$PY" benchmarks/bench_train_gpu.py --shape "$SHAPE" --data "$D" --unsloth-site "$USITE" \
    --variants "$v" $STEPS --json "$OUT/train_${SHAPE}_$v.json" 2>&1 | tee -a "$log"
  printf '\n== %s: exit %s at %s s\n' "$v" "${PIPESTATUS[0]}" "$SECONDS" | tee -a "$log"  # 124: cut at the cap
done

# shellcheck disable=SC2086
"$PY" - "$OUT" "$SHAPE" $VARIANTS <<'PY' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_train_gpu import print_runs
out, shape, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
files = [out / f"train_{shape}_{v}.json" for v in variants]
results = [r for p in files if p.is_file() for r in json.loads(p.read_text())]
print_runs(results)
for r in results:
    if "error" in r:
        print(f"{r['variant']}: failed: {r['error']}")
PY
