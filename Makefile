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
