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
.PHONY: bench bench-speed bench-quality bench-depth bench-inference bench-detection bench-video bench-translation
bench: bench-speed bench-inference bench-detection bench-video bench-translation
bench-speed: $(STAMP)
	$(PY) benchmarks/bench_speed.py
bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py
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
