# fusion-suite — `make demo` (the main job) and `make test`. Each sets up .venv itself.
# Every pip install goes through constraints.txt so torch stays the CPU build 2.13.0.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed-stamp
RUNS_DIR ?= runs
# test processes: half the suite's time is spent waiting on subprocess trainings, servers and browsers, so two
# workers on two cores finish far sooner than one; a module's tests stay together (they share its trained runs)
TEST_WORKERS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: venv system-deps test demo bench app screenshots clean help

help:
	@echo "make demo   fetch data, train, score and explain every recipe; print the metrics table"
	@echo "make test   run the test suite"
	@echo "make bench  run every benchmark in bench/ (each prints one JSON line last)"
	@echo "make app    open the Streamlit dashboards on the runs in $(RUNS_DIR)/"
	@echo "make screenshots  capture the README's dashboard pictures (docs/screenshots/) from the runs in $(RUNS_DIR)/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[all,test,distributed]'
	@if $(PIP) list 2>/dev/null | grep -qi '^nvidia-'; then \
		echo "error: a CUDA package slipped into $(VENV); check constraints.txt" >&2; exit 1; fi
	@touch $@

venv: $(STAMP)

# The nuScenes devkit: a test-only reference for the driving recipe's detection metric. nuscenes-devkit 1.2.0 pins
# numpy < 2, which this venv cannot take, so it and the three modules its detection code imports are installed
# without their pins into a folder of their own, which only the metric test puts on its path.
DEVKIT := $(VENV)/nuscenes-devkit
DEVKIT_PACKAGES := nuscenes-devkit==1.2.0 pyquaternion==0.9.9 cachetools==8.0.2 opencv-python-headless==5.0.0.93
$(DEVKIT)/.stamp: | $(STAMP)
	$(PIP) install -q --no-deps --target $(DEVKIT) $(DEVKIT_PACKAGES)
	@touch $@

# Debian packages: chromium + chromedriver (the dashboards' browser tests), espeak-ng (the speech cohort's voices),
# sox (audio conversions), libsndfile1 (soundfile).
DEBIAN_PACKAGES := chromium chromium-driver espeak-ng sox libsndfile1
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian packages: $$missing"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: venv system-deps $(DEVKIT)/.stamp
	NUSCENES_DEVKIT_PATH=$(abspath $(DEVKIT)) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: venv system-deps
	$(BIN)/python -m recipes.demo --runs-dir $(RUNS_DIR)

bench: venv
	@set -e; for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

app: venv
	$(BIN)/fusion app --runs-dir $(RUNS_DIR)

screenshots: venv system-deps
	$(BIN)/python -m tests.apps.screenshots --runs-dir $(RUNS_DIR)

clean:
	rm -rf $(VENV) .pytest_cache
