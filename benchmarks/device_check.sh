#!/usr/bin/env bash
# Everything this project measures or checks on a CUDA GPU, in one prepared run
# (a lent GPU machine is billed by the second; see docs/results.md for the outcomes).
#
#   OUT=/tmp/gpu bash benchmarks/device_check.sh            # all steps
#   OUT=/tmp/gpu bash benchmarks/device_check.sh cuda speed # some of: speed speed256 translation cuda profile train
#
# Runs under the machine's own python3 with torch, torchvision and timm installed and
# the repository on PYTHONPATH. The translation steps need fairseq: a folder
# .devsite/site holding fairseq (its pure-Python part is enough for in-process
# training), hydra, omegaconf and antlr4, plus .devsite/whl/bitarray-*.whl for the
# GPU machine's Python. Made from this project's .venv (after `make setup`):
#   SP=.venv/lib/python3.11/site-packages; mkdir -p .devsite/site
#   for p in fairseq fairseq_cli hydra omegaconf antlr4; do cp -r $SP/$p .devsite/site/; done
#   find .devsite/site \( -name __pycache__ -o -name '*.so' -o -name examples \) -prune -exec rm -rf {} +
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .devsite/whl bitarray==3.12.3
#   echo /.devsite/ >> .git/info/exclude     # then pass .devsite along with the working tree
# Each step has its own time limit, logs to $OUT/<step>.log, and a failing step does
# not stop the next; docs/results.md (to which the benchmarks append) is copied to $OUT.
set -u
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS=${*:-speed speed256 translation cuda profile train}
PY=${PYTHON:-python3}

run() {  # run NAME LIMIT CMD...: one step, logged, limited, never fatal
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date +%T), limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "=== $name: rc $rc, $((SECONDS - t0)) s"
    cp docs/results.md "$OUT/results.md" 2>/dev/null
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import sys, torch, torchvision, timm; print(sys.version.split()[0], torch.__version__, torchvision.__version__, timm.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"

for step in $STEPS; do
  case $step in
  speed)  # issue 6 target: bf16 autocast, channels-last, ImageNet resolution
    run speed 200 $PY benchmarks/bench_speed.py --device cuda --amp --channels-last \
        --batch 128 --size 224 --rounds 5 --steps 10 --warmup 3 ;;
  speed256)  # the same at batch 256 (NVIDIA's per-GPU batch for ResNet-50 mixed precision)
    run speed256 200 $PY benchmarks/bench_speed.py --device cuda --amp --channels-last \
        --batch 256 --size 224 --rounds 5 --steps 10 --warmup 3 --models rescalenet50,resnet50,nf_resnet50 ;;
  translation)  # issue 5 target: tokens/s of rescale_transformer_wmt_en_de vs transformer_wmt_en_de,
    # with the no-LayerNorm ceiling, at a host-bound (96 x 64) and a larger (384 x 64 tokens) batch
    mkdir -p /tmp/devsite
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/devsite .devsite/whl/*.whl
    PYTHONPATH=".devsite/site:/tmp/devsite:$PYTHONPATH" run translation 150 \
        $PY benchmarks/bench_translation.py --skip-quality --batch 96 --length 64 --repeats 10 --steps 5 --warmup 9
    PYTHONPATH=".devsite/site:/tmp/devsite:$PYTHONPATH" run translation_384 200 \
        $PY benchmarks/bench_translation.py --skip-quality --batch 384 --length 64 --repeats 6 --steps 3 --warmup 9
    PYTHONPATH=".devsite/site:/tmp/devsite:$PYTHONPATH" run profile_translation 90 \
        $PY benchmarks/profile_step.py --translation --device cuda --amp --batch 96 --length 64 --top 30 ;;
  cuda)
    run cuda_check 120 $PY benchmarks/cuda_check.py ;;
  profile)
    run profile_cnn 90 $PY benchmarks/profile_step.py --models rescalenet50,resnet50 --device cuda --amp \
        --channels-last --batch 128 --size 224 --top 30 ;;
  train)  # rescalenet.train's CUDA path: torchrun + NCCL, bf16 autocast, channels-last
    $PY -c "from rescalenet.data import write_imagefolder as w; w('/tmp/shapes', num_classes=4, train_per_class=64, val_per_class=16, size=64)" >/dev/null
    run train 120 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m rescalenet.train \
        --data /tmp/shapes --output /tmp/run --arch rescalenet50 --img-size 64 -b 32 --epochs 2 \
        --warmup-epochs 1 --amp --channels-last --workers 2 --progress plain --print-freq 4 ;;
  *) echo "unknown step $step" ;;
  esac
done
