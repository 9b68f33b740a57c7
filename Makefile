# galforge: two commands on a fresh machine.
#   make demo   create .venv, install galforge, train a small model on bundled data, write a report
#   make test   create/update .venv and run the test suite
#   make check  lint and format check (ruff), make docs, then make test: what CI runs
#   make docs   build the HTML documentation into docs/_build/html (fails on any warning)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch available on this kind of machine; a torch already in the venv
# (e.g. a CUDA build) is kept.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv install demo test check lint docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

venv install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/galforge demo --out $(DEMO_OUT) --overwrite

test: $(VENV)/.installed
	$(PY) -m pytest tests

LINTED := src tests benchmarks scripts docs/conf.py docs/cli_reference.py

check: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(MAKE) docs
	$(MAKE) test

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINTED)

# A fresh build every time (-E): warnings of unchanged pages are not forgotten. Offline.
docs: $(VENV)/.installed
	$(PY) -m sphinx -b html -E -W --keep-going -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(DEMO_OUT) .pytest_cache docs/_build docs/_generated
