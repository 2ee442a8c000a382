#!/usr/bin/env bash
# Builds the Ray pack for the device (issue #17: bench_engine.py, local vs Ray Data, on all cores).
#
#   bash benchmarks/device/ray_pack.sh [PYTHON_VERSION (3.12)] [DEST (.gpu_ray at the repo root)]
#
# DEST/site.tar.xz  -> /tmp/site: Ray (ray[data], slimmed), polars + its runtime, datasets, and the pure
#                      wheels they need that the device image lacks (see WHEELS)
# DEST/tok/         the SmolLM2 tokenizer files (tokenize's --tokenizer; the device cannot convert the GGUF)
# DEST/data.tar.xz  -> /tmp/data: the ../shared/data texts bench_engine.py builds its inputs from
#
# Env: PY (a Python with dataprep's deps, for pip and the tokenizer; default: the repo's .venv, else python3),
#      SHARED (default ../shared/data). Needs PyPI (pip download), xz, strip.
set -euo pipefail
source "$(dirname "$0")/wheels.sh"
PYV=${1:-3.12}
DEST=$(realpath -m "${2:-$REPO/.gpu_ray}")

# The device image (KINDS.md's package list) has numpy, pandas, pyarrow, click, filelock, fsspec, msgpack,
# protobuf, pyyaml, requests, packaging, aiohttp, psutil, xxhash, tqdm, huggingface_hub: Ray's, polars' and
# datasets' other needs. It lacks these:
WHEELS=(
  ray==2.60.0                     # pyproject's ray extra: ray[data]>=2.50,<3
  polars==2.1.0 polars-runtime-32==2.1.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1  # ray needs jsonschema
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19  # tokenize writes its shards with datasets
)
# Ray Data on a local cluster, started with include_dashboard=False (dataprep/engine.py), needs none of these:
# the Java jars, the libraries on top of Ray, the dashboard's web client (its Python, which the raylet's agents
# run, stays), tests.
RAY_UNUSED=(jars rllib serve tune train llm workflow dashboard/client/build)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
site=$work/site
site_from_wheels "$PYV" "$site" "${WHEELS[@]}"
for d in "${RAY_UNUSED[@]}"; do rm -rf "${site:?}/ray/$d"; done
# Symbol tables only (the dynamic symbols stay): -25% on the 300 MB of binaries.
find "$site" -type f \( -name '*.so' -o -path '*/ray/core/src/*' \) -exec sh -c \
  'file -b "$1" | grep -q "^ELF" && strip --strip-unneeded "$1"' _ {} \;
echo "site: $(du -sm "$site" | cut -f1) MB unpacked"

mkdir -p "$work/out"
pack_xz "$site" "$work/out/site.tar.xz"
tar -C "$SHARED" -cJf "$work/out/data.tar.xz" alpaca_en_demo.json alpaca_zh_demo.json ko_alpaca_1040.json \
  goemotions/train.tsv stsb/sts-train.csv stsb/sts-dev.csv stsb/sts-test.csv  # bench_dedupe.real_texts
save_smollm2 "$work/out/tok"
publish "$work/out" "$DEST"
