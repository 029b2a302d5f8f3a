# ablate — every target works as the first command on a fresh machine.
PYTHON      ?= python3
VENV        ?= .venv
# CPU build by default; a GPU user overrides it, e.g. make setup TORCH_SPEC="torch==2.13.0 --index-url …"
TORCH_SPEC  ?= torch==2.13.0
STUDY       ?= studies/quick.yaml
RESULTS     ?= results
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

.PHONY: setup study report test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

study: setup
	$(PY) -m ablate run $(STUDY) --results $(RESULTS)

report: setup
	$(PY) -m ablate report $(STUDY) --results $(RESULTS)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile tests

bench: setup
	PYTHONPATH=. $(PY) bench/fleet_vs_loop.py

clean:
	rm -rf $(RESULTS)
