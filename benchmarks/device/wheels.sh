# Sourced by the *_pack.sh scripts: what they share.
# Env: PY (a Python with dataprep's deps: pip, the tokenizer, the shards; default: the repo's .venv, else python3),
#      SHARED (the data folder; default ../shared/data).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${SHARED:-$REPO/../shared/data}
if [[ -z ${PY:-} ]]; then [[ -x $REPO/.venv/bin/python ]] && PY=$REPO/.venv/bin/python || PY=python3; fi
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)

# site_from_wheels PYTHON_VERSION SITE NAME==VERSION...: the wheels for CPython PYTHON_VERSION on Linux x86_64,
# from PyPI, installed (no dependencies) into the folder SITE, without their scripts and tests.
site_from_wheels() {
  local pyv=$1 site=$2; shift 2
  local target=(--only-binary=:all: --python-version "$pyv" --implementation cp "${PLATFORMS[@]}")
  local whl=$site.wheels
  "$PY" -m pip download -q --no-deps "${target[@]}" -d "$whl" "$@"
  "$PY" -m pip install -q --no-index --no-deps --no-compile "${target[@]}" --target "$site" "$whl"/*.whl
  rm -rf "$whl" "$site/bin"
  find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
}

# pack_xz DIR FILE: DIR's contents as FILE (tar.xz), the strongest compression on every core.
pack_xz() { XZ_OPT=${XZ_OPT:--9 -T0} tar -C "$1" -cJf "$2" .; }

# save_smollm2 DIR: the packaged SmolLM2 tokenizer's files (the device cannot convert the GGUF).
save_smollm2() {
  PYTHONPATH=$REPO "$PY" -c "import sys
from dataprep.models import load_tokenizer, save_tokenizer
save_tokenizer(load_tokenizer('smollm2-135m'), sys.argv[1])" "$1"
}

# publish WORK DEST: WORK becomes DEST (a previous DEST goes only once WORK is complete).
publish() {
  rm -rf "$2.tmp" && mv "$1" "$2.tmp" && rm -rf "$2" && mv "$2.tmp" "$2"
  du -sh "$2"/*
  (shopt -s nullglob; du -bc "$2"/*.tar.xz "$2"/tok/*) | tail -1 | awk '{printf "pack: %.1f MiB\n", $1 / 1048576}'
}
