# Two commands on a fresh machine: `make train` (main job) and `make test` (the suite).
# Both create .venv at the repo root and install archsearch into it if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install train test test-all validate lint docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# the repo root on sys.path, so Hydra finds the sweeper in the hydra_plugins namespace package
	$(PY) -c "import site, sys; open(site.getsitepackages()[0] + '/archsearch-root.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	touch $(STAMP)

install: $(STAMP)

## train dilated_sep on CIFAR-10 (extra Hydra overrides: make train ARGS="trainer.epochs=5")
train: $(STAMP)
	$(PY) -m archsearch.train $(ARGS)

## the fast suite (CPU, synthetic data), one pytest worker per core; the fault, browser and slow tests too: make test-all
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal -m "not slow and not servers" $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal $(ARGS)

validate: $(STAMP)
	$(PY) -m archsearch.validate $(ARGS)

## ruff, the import contracts in pyproject.toml (the layers: imports run one way), module and function sizes
lint: $(STAMP)
	$(PY) -m ruff check archsearch hydra_plugins tests
	cd $(CURDIR) && $(VENV)/bin/lint-imports
	$(PY) .ci/size_check.py

## the user guide (docs/, mkdocs.yml) served at http://127.0.0.1:8000 while you edit it; CI builds it with --strict
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve
