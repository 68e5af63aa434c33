# Two commands on a fresh machine with Python >= 3.10 and pip:
#   make demo   creates .venv, installs everything, runs the main job on the embedded model
#   make test   the same install, then the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,plot,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/calibkit score sentiment

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) build *.egg-info
