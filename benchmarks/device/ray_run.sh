#!/usr/bin/env bash
# On the device, from the repo root, with the Ray pack carried (ray_pack.sh; carry [".gpu_ray"]):
#
#   bash benchmarks/device/ray_run.sh
#
# bench_engine.py, local vs Ray Data on every core: convert ROWS, tokenize TOK, exact dedupe EXACT and near
# dedupe NEAR1 rows local and on Ray, near dedupe NEAR rows on Ray alone. Writes $OUT/engine_<cores>cores.json
# (every finished row, as it comes) and .log. The whole script ends within BUDGET seconds (570): the bench is
# cut there, and the JSON written so far stays.
# Env: ROWS TOK EXACT NEAR1 NEAR, MEMORY_EVERY (bench_engine's --memory-every; 0: time without PSS sampling), BUDGET, PACK (.gpu_ray), PY (python3), SITE (/tmp/site), DATA (/tmp/data),
#      OUT (benchmarks/out/device when unset).
set -uo pipefail
PACK=${PACK:-.gpu_ray} PY=${PY:-python3} SITE=${SITE:-/tmp/site} DATA=${DATA:-/tmp/data}
OUT=${OUT:-benchmarks/out/device}
mkdir -p "$OUT"
rm -rf "$SITE" "$DATA" && mkdir -p "$SITE" "$DATA"
tar -xJf "$PACK/site.tar.xz" -C "$SITE" && tar -xJf "$PACK/data.tar.xz" -C "$DATA" || exit 1
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
cores=$(nproc)
left=$(( ${BUDGET:-570} - SECONDS - 10 ))  # timeout's -k grace below, and the pipe closing
(( left > 0 )) || { echo "BUDGET ${BUDGET:-570} s is used up by the unpacking ($SECONDS s)" >&2; exit 1; }
log=$OUT/engine_${cores}cores.log
echo "unpacked in ${SECONDS} s; $cores cores; the bench gets $left s" | tee "$log"
"$PY" -c 'import sys, ray, polars, datasets, pyarrow, pandas; print("python", sys.version.split()[0], "ray", ray.__version__,
  "polars", polars.__version__, "datasets", datasets.__version__, "pyarrow", pyarrow.__version__, "pandas", pandas.__version__)' 2>&1 | tee -a "$log"
# timeout signals its whole process group: the bench, its stage subprocess and the Ray cluster that one started
timeout -k 5 "$left" "$PY" benchmarks/bench_engine.py --data "$DATA" --rows "${ROWS:-10000000}" \
  --tokenize-rows "${TOK:-100000}" --num-proc "$cores" --tokenizer "$PACK/tok" --no-cold \
  --exact-local-rows "${EXACT:-1000000}" --near-local-rows "${NEAR1:-1000000}" --near-rows "${NEAR:-10000000}" \
  ${MEMORY_EVERY:+--memory-every "$MEMORY_EVERY"} --json "$OUT/engine_${cores}cores.json" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
[[ $rc == 124 || $rc == 137 ]] && echo "cut at $left s (BUDGET ${BUDGET:-570}); the JSON holds the rows done" | tee -a "$log"
echo "ray_run.sh: exit $rc after $SECONDS s" | tee -a "$log"
exit "$rc"
