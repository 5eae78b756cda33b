# The two commands of the README. Each creates its own virtual environment (.venv), installs
# torch 2.13.0 first, then torchtcn. On this build farm pip's sources hold the CPU build; on
# another machine plain PyPI gives the CUDA build unless TORCH_INDEX (below) points at the CPU one.
#   make demo   train a TCN and an LSTM on a real task, print the table, write the plot
#   make test   run the test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Where pip looks for torch. Empty: pip's configured sources (here: the local CPU wheel). Off
# this build farm, pass TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build.
TORCH_INDEX ?=

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $@

demo: install
	$(VENV)/bin/torchtcn demo

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
