#!/usr/bin/env bash
# Builds .venv with the whole pinned stack (see README "Set-up" and docs/stack.md).
# Idempotent: pip skips what is already installed at the pinned version, and the
# mmcv / fairseq-fixed wheels compiled on the first run come from pip's wheel cache.
# Never add --no-cache-dir here: it would recompile mmcv (about 15 minutes) every time.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY311=${PYTHON:-python3.11}
START=$(date +%s)

step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
fail() { printf '\nmake setup FAILED: %s\n' "$*" >&2; exit 1; }
trap 'fail "the command on line $LINENO exited with status $? (see the output above)"' ERR

command -v "$PY311" >/dev/null || fail "Python 3.11 is needed ('$PY311' not found; set PYTHON=/path/to/python3.11)"
"$PY311" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || fail "'$PY311' is not Python 3.11"

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $("$PY311" --version)"
  "$PY311" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --progress-bar off)

step "build tools: setuptools<81 (mmengine/openmim import pkg_resources), wheel, ninja, cython, numpy<2"
"${PIP[@]}" "setuptools>=70,<81" wheel ninja "cython<3.1" "numpy>=1.26,<2"

step "torch 2.11.0 / torchvision 0.26.0 / torchaudio 2.11.0 (first time: a few GB download, about 1-3 minutes)"
"${PIP[@]}" torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0

step "mmengine 0.10.7"
"${PIP[@]}" mmengine==0.10.7

if "$VENV/bin/python" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  step "mmcv 2.1.0 with compiled ops: already installed"
else
  step "mmcv 2.1.0 from its sdist with C++ ops. FIRST BUILD ON A MACHINE: 13-18 MINUTES on 2 cores" \
       "(77 C++ files; later runs take the wheel from pip's cache in seconds)"
  MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
    "${PIP[@]}" --no-build-isolation mmcv==2.1.0
fi

step "mmdet 3.3.0"
"${PIP[@]}" mmdet==3.3.0

step "mmaction2 1.2.0 (--no-deps: it asks for opencv-contrib-python beside mmcv's opencv-python) + decord, importlib-metadata"
"${PIP[@]}" --no-deps mmaction2==1.2.0
"${PIP[@]}" decord==0.6.0 importlib-metadata einops matplotlib scipy Pillow

if "$VENV/bin/python" -c 'import fairseq; assert fairseq.__version__.startswith("0.12.3")' 2>/dev/null; then
  step "fairseq-fixed 0.12.3.1: already installed"
else
  step "fairseq-fixed 0.12.3.1 from its sdist (Cython + C++; first build about 4 minutes)"
  "${PIP[@]}" --no-build-isolation fairseq-fixed==0.12.3.1
fi

step "sentencepiece 0.2.1 (joint BPE of the gettext corpus, projects/translation/prepare_gettext.py)"
"${PIP[@]}" sentencepiece==0.2.1

step "openmim 0.3.9 (--no-deps: its opendatalab/openxlab chain pins old setuptools/requests/rich and is never imported)"
"${PIP[@]}" --no-deps openmim==0.3.9
"${PIP[@]}" click colorama model-index pandas requests rich tabulate

step "timm, pytest, tensorboard, then this project in editable mode"
"${PIP[@]}" timm==1.0.31 pytest tensorboard
# --no-deps: the extras' packages are installed above with the flags they need
# (mmcv compiled, mmaction2 without opencv-contrib, openmim without openxlab); a
# resolver pass over them would undo that.
"${PIP[@]}" --no-build-isolation --no-deps -e .

step "checking the installed stack"
"$VENV/bin/python" - <<'PY'
import importlib, torch
for name in ["torchvision", "torchaudio", "mmengine", "mmcv", "mmdet", "fairseq", "timm", "mim", "decord"]:
    m = importlib.import_module(name)
    print(f"  {name:12s} {getattr(m, '__version__', '?')}")
import mmcv.ops  # compiled ops: RoIAlign, nms
import rescalenet
print(f"  torch        {torch.__version__}")
print(f"  rescalenet   {rescalenet.__version__}")
PY
"$VENV/bin/mim" --help >/dev/null || fail "mim does not start"

"$VENV/bin/python" - "$VENV" <<'PY'
import hashlib, pathlib, sys
h = hashlib.sha256()
for f in [".ci/setup_env.sh", "setup.py"]:
    h.update(pathlib.Path(f).read_bytes())
pathlib.Path(sys.argv[1], ".setup-stamp").write_text(h.hexdigest() + "\n")
PY
step "done: $VENV is ready ($(( $(date +%s) - START )) s)"
