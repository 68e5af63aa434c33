# Two commands on a fresh machine with Python >= 3.10 and pip:
#   make demo   creates .venv, installs everything, runs the main job (calibkit eval) on the embedded model
#   make test   the same install (and Debian's chromium for the browser test), then the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench reliability clean

REFS := $(VENV)/.test-references

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,plot,serve,dev,hf,ray,conformal]'
	touch $(STAMP)

# netcal, the tests' reference for binned ECE, declares CUDA torch, pyro and gpytorch
# as requirements but its metrics need only torch: install it without them, with the
# CPU build of torch.
$(REFS): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps netcal==1.4.0
	touch $(REFS)

install: $(STAMP)

demo: install
	$(VENV)/bin/calibkit eval

# tests/test_report_browser.py opens the reports in Debian's Chromium (it skips without it).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@command -v apt-get >/dev/null && { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/calibkit-chromium.log 2>&1 || \
		echo "make: could not install chromium, so the browser test will skip (/tmp/calibkit-chromium.log)" >&2

test: install $(REFS) $(CHROMIUM)
	$(PY) -m pytest

# The bench extra: lm-evaluation-harness, transformers and gguf for benchmarks/bench_lmeval.py.
BENCH_EXTRA := $(VENV)/.bench-extra

$(BENCH_EXTRA): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_EXTRA)

# Every benchmark, side by side on this machine; writes benchmarks/RESULTS.md.
bench: install $(REFS) $(BENCH_EXTRA)
	$(PY) benchmarks/run_all.py

# Faults, kill-and-resume and load against a real calibkit serve; writes benchmarks/RELIABILITY.md.
reliability: install
	$(PY) benchmarks/reliability.py

clean:
	rm -rf $(VENV) build *.egg-info
