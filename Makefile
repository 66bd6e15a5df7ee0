# RescaleNet: `make setup` builds .venv with the pinned stack; `make test` runs the
# fast suite (and builds .venv first when it is missing or older than its recipe).
PY     := .venv/bin/python
STAMP  := .venv/.setup-stamp
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: setup test test-slow test-all demo bench clean-venv

setup:
	bash .ci/setup_env.sh

$(STAMP): .ci/setup_env.sh setup.py
	bash .ci/setup_env.sh

test: $(STAMP)
	$(PYTEST) -q -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST) -q -m slow tests

test-all: $(STAMP)
	$(PYTEST) -q tests

demo: $(STAMP)
	$(PY) -m projects.detection.demo

clean-venv:
	rm -rf .venv

# Benchmarks: each compares against its baseline in the same run and prints ratios.
.PHONY: bench bench-speed bench-depth bench-inference bench-detection bench-video bench-translation
bench: bench-speed bench-inference bench-detection bench-video bench-translation
bench-speed: $(STAMP)
	$(PY) benchmarks/bench_speed.py
bench-depth: $(STAMP)
	$(PY) benchmarks/bench_depth.py
bench-inference: $(STAMP)
	$(PY) benchmarks/bench_inference.py --arch 50 --batch-size 8 --threads 1
bench-detection: $(STAMP)
	$(PY) benchmarks/bench_detection.py
bench-video: $(STAMP)
	$(PY) benchmarks/bench_video.py
bench-translation: $(STAMP)
	$(PY) benchmarks/bench_translation.py

# Real data (issue 13): the four Fashion-MNIST IDX files -> data/fashion_mnist (ImageFolder
# for `python -m rescalenet.train`), data/fashion_coco (detection) and data/fashion_clips
# (video); each is skipped when its manifest.json shows it is already written.
# `make data DATA=/path` reads a copy of the IDX files made elsewhere.
FASHION_MNIST_DEB := /usr/share/datasets/fashion-mnist
DATA ?= $(FASHION_MNIST_DEB)
.PHONY: data bench-fashion bench-detection-real bench-video-real
data: $(STAMP)
	@if ! ls $(DATA)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
	  if [ "$(DATA)" = "$(FASHION_MNIST_DEB)" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "no Fashion-MNIST in $(DATA): apt-get install -y dataset-fashion-mnist"; \
	    apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; } || exit 1; \
	  else \
	    echo "error: no Fashion-MNIST IDX files in $(DATA). Install Debian's package as root" \
	         "(apt-get install dataset-fashion-mnist, files in $(FASHION_MNIST_DEB)), or download" \
	         "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist" \
	         "and run: make data DATA=/path/to/that/folder" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PY) -m rescalenet.fashion_mnist --data $(DATA) --output data/fashion_mnist
	$(PY) -m projects.detection.fashion_coco --data $(DATA) --output data/fashion_coco
	$(PY) -m projects.video.fashion_clips --data $(DATA) --output data/fashion_clips
# Each writes its runs under runs/ (RESULTS=benchmarks/results continues the recorded tables
# behind docs/results.md instead); a re-run skips finished runs.
RESULTS ?= runs
bench-fashion: $(STAMP)
	$(PY) benchmarks/bench_fashion.py --group cifar20 --output $(RESULTS)/fashion
	$(PY) benchmarks/bench_fashion.py --group ablations --output $(RESULTS)/fashion
	$(PY) benchmarks/bench_fashion.py --group depth --output $(RESULTS)/fashion
	$(PY) benchmarks/bench_fashion.py --group imagenet18 --output $(RESULTS)/fashion
	$(PY) benchmarks/bench_fashion.py --group cifar56 --output $(RESULTS)/fashion
bench-detection-real: $(STAMP)
	$(PY) benchmarks/bench_detection_real.py --output $(RESULTS) --plot docs/detection_real.png
bench-video-real: $(STAMP)
	$(PY) benchmarks/bench_video_real.py --output $(RESULTS) --plot docs/video_real.png

# Real text (issue 14): English -> MT_LANG message pairs of the gettext catalogs under
# /usr/share/locale -> data/gettext_en_$(MT_LANG) (sentencepiece BPE, fairseq-preprocess).
MT_LANG ?= de
.PHONY: corpus-gettext
corpus-gettext: $(STAMP)
	$(PY) -m projects.translation.prepare_gettext --locale-dir /usr/share/locale --lang $(MT_LANG) \
	    --output data/gettext_en_$(MT_LANG) --vocab-size 4000
.PHONY: bench-translation-real
bench-translation-real: $(STAMP)
	$(PY) benchmarks/bench_translation_real.py --data data/gettext_en_$(MT_LANG) --lang $(MT_LANG) \
	    --output $(RESULTS)/translation_real --target-loss 6.5 --plot docs/translation_valid_loss.png
