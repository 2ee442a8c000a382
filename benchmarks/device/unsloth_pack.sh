#!/usr/bin/env bash
# Builds the unsloth pack for the device (issue #14: bench_train_gpu.py's whole runs trl_liger_flex, unsloth,
# dataprep; RESULTS.md, "The pack").
#
#   bash benchmarks/device/unsloth_pack.sh [PYTHON_VERSION (3.12)] [DEST (.gpu_unsloth at the repo root)]
#
# DEST/site.tar.xz          -> /tmp/site: what every run needs that the image lacks (SITE_WHEELS)
# DEST/site_unsloth.tar.xz  -> /tmp/site_unsloth: unsloth and its pins, first on the unsloth run's PYTHONPATH
#                              only (bench_train_gpu.py --unsloth-site), so the others keep trl 1.16 / datasets 5
# DEST/data.tar.xz          -> /tmp/D: bench_train_gpu.py --data: alpaca_en_demo through dataprep convert, then
#                              tokenize (plain/) and tokenize --pack (packed/), and the SmolLM2 tokenizer/
#
# Env: PY (a Python with dataprep installed: pip, the tokenizer and the shards; default: the repo's .venv, else
#      python3), SHARED (default ../shared/data). Needs PyPI (pip download), xz.
set -euo pipefail
source "$(dirname "$0")/wheels.sh"
PYV=${1:-3.12}
DEST=$(realpath -m "${2:-$REPO/.gpu_unsloth}")

SITE_WHEELS=(bitsandbytes==0.50.2 liger-kernel==0.8.5 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
             xxhash==4.1.0)
BNB_KEEP=(libbitsandbytes_cuda130.so libbitsandbytes_cpu.so)  # the image's CUDA 13.0, and the CPU fallback
# unsloth 2026.10.9 pins trl<=1.15.0 and datasets<5. Its other imports come with the image (RESULTS.md: "What
# unsloth needs that the image lacks"); cut_cross_entropy is optional (its fused loss), and small.
UNSLOTH_WHEELS=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 cut_cross_entropy==25.1.1)
UNSLOTH_UNUSED=(studio unsloth_cli)  # the web UI (80 MB) and the CLI

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out"

site_from_wheels "$PYV" "$work/site" "${SITE_WHEELS[@]}"
for lib in "$work"/site/bitsandbytes/libbitsandbytes_*.so; do
  [[ " ${BNB_KEEP[*]} " == *" ${lib##*/} "* ]] || rm "$lib"
done
pack_xz "$work/site" "$work/out/site.tar.xz"

site_from_wheels "$PYV" "$work/site_unsloth" "${UNSLOTH_WHEELS[@]}"
for d in "${UNSLOTH_UNUSED[@]}"; do rm -rf "${work:?}/site_unsloth/$d"; done
pack_xz "$work/site_unsloth" "$work/out/site_unsloth.tar.xz"

D=$work/D
PYTHONPATH=$REPO "$PY" -m dataprep convert "$SHARED/alpaca_en_demo.json" -o "$D/records"
PYTHONPATH=$REPO "$PY" -m dataprep tokenize "$D/records" -o "$D/plain"
PYTHONPATH=$REPO "$PY" -m dataprep tokenize "$D/records" -o "$D/packed" --pack
rm -rf "$D/records"
save_smollm2 "$D/tokenizer"
pack_xz "$D" "$work/out/data.tar.xz"
du -sh "$work"/site "$work"/site_unsloth "$D" | sed 's/^/unpacked: /'
publish "$work/out" "$DEST"
