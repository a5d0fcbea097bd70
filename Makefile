# Two commands for a fresh machine (Python >= 3.10):
#   make site   -> installs the environment in .venv and builds the executed website in _build/html
#   make test   -> installs the environment in .venv and runs the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: site test bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=23.1"
	$(BIN)/python -m pip install -r requirements.txt
	touch $(STAMP)

site: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Sitio listo: abre _build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m course_utils.bench

clean:
	rm -rf _build
