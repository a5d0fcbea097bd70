# Two commands for a fresh machine (Python >= 3.10):
#   make site   -> installs the environment in .venv and builds the executed website in _build/html
#   make test   -> installs the environment in .venv and runs the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: site test bench clean

$(STAMP): requirements.txt pyproject.toml
	@echo ">> Creando el entorno en $(VENV) e instalando requirements.txt."
	@echo ">> llama-cpp-python se compila la primera vez (5-10 min con 2 núcleos; pip guarda la rueda"
	@echo ">> compilada y las siguientes instalaciones tardan segundos). pip lo indica con"
	@echo ">> 'Building wheel for llama-cpp-python ... still running...'."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=23.1"
	$(BIN)/python -m pip install --progress-bar off -r requirements.txt
	touch $(STAMP)

site: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Sitio listo: abre _build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m course_utils bench

clean:
	rm -rf _build
