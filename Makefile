# kd_fastai: `make demo` runs the main job, `make test` runs every test. Both set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kd_fastai-installed
LATEST := $(VENV)/latest-fastai
LATEST_STAMP := $(LATEST)/.installed
FMNIST ?= /usr/share/datasets/fashion-mnist
# torch pins that pip finds on this kind of machine (x86_64: CUDA build from local disk; aarch64: CPU build)
ifeq ($(shell uname -m),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif
# the newest fastai line that users install next to kd_fastai; checked by `make test` too
LATEST_FASTAI ?= 'fastai==2.8.12' 'fastcore>=2.2.22' 'fasttransform>=0.0.3' 'plum-dispatch<2.10' 'fastprogress>=1.0.3' fastdownload

.PHONY: demo test test-nbs test-latest test-install slow bench data install export clean-venv device-carry docs test-docs browser

install: $(STAMP)

$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the newest fastai and fastcore, installed beside (not into) the dev environment and put first on PYTHONPATH
$(LATEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps --target $(LATEST) $(LATEST_FASTAI)
	touch $(LATEST_STAMP)

data:
	@if [ -n "$$KD_FASTAI_FMNIST" ] || ls $(FMNIST)/train-images-idx3-ubyte* >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist', or set KD_FASTAI_FMNIST to a folder holding the four idx files"; exit 1; fi

demo: $(STAMP) data
	$(BIN)/kd_fastai_distill --preset quick

test: test-nbs test-latest test-install test-docs

test-nbs: $(STAMP) data
	$(BIN)/nbdev_test --n_workers 2 --timing

test-latest: $(LATEST_STAMP) data
	PYTHONPATH=$(LATEST) $(BIN)/python -m pytest -q --durations=8 tests --ignore=tests/test_docs.py

# kd_fastai's wheel installed with its runtime requirements only (no extras) into a fresh environment that reuses the dev
# environment's torch: `from kd_fastai.all import *`, a shipped teacher, one short distillation, export -> predict
test-install: $(STAMP) data
	env -u PYTHONPATH $(BIN)/python tests/plain_install.py

# the documentation site: docs/build.py executes the teaching notebooks, renders every notebook and runs
# `mkdocs build --strict` into _site/; its packages (docs/requirements.txt) go into the dev environment
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) docs/requirements.txt
	$(BIN)/python -m pip install -q -r docs/requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP) data
	env -u PYTHONPATH $(BIN)/python docs/build.py

# headless Chromium (Debian's package) for the site's browser test
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)) >/dev/null; \
	else echo "Chromium not found: run 'sudo apt-get install chromium'"; exit 1; fi

# builds the site strictly and opens it in headless Chromium (screenshots in _site_build/screenshots/)
test-docs: $(DOCS_STAMP) data browser
	env -u PYTHONPATH KD_FASTAI_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -s tests/test_docs.py

# real-data training cells (`#| slow`), not run by CI
slow: $(STAMP) data
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing

# cost benchmarks (ratios measured within one run); the method comparisons are bench/{takd_rco,selfkd,stagewise}.py
bench: $(STAMP) data
	$(BIN)/python bench/loaders.py
	$(BIN)/python bench/kd_epoch.py
	$(BIN)/python bench/teacher_cache.py

# what a call on a lent GPU machine carries (python 3.12 and torch there, no fastai, no network): fastai's wheels and
# the four data files, in git-ignored folders; `bench/device.sh` installs and uses them there (see DEVELOPERS.md)
DEVICE_WHEELS ?= 'fastai==2.8.12' 'fastcore>=2.2.22' 'fasttransform>=0.0.3' 'plum-dispatch<2.10' 'fastprogress==1.0.3' fastdownload beartype
device-carry: $(STAMP) data
	mkdir -p .whl .fmnist
	$(BIN)/python -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d .whl $(DEVICE_WHEELS)
	cp "$${KD_FASTAI_FMNIST:-$(FMNIST)}"/*-ubyte* .fmnist/
	@ls .whl .fmnist

export: $(STAMP)
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export

clean-venv:
	rm -rf $(VENV)
