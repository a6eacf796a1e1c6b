# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Where `make run` keeps its SQLite database, models and caches.
DEMO_DATA ?= $(CURDIR)/var/demo
SHARED_PLATE := $(CURDIR)/../shared/data/formulatrix_90j8
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint bench clean default-model

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]"
	touch $@

install: $(BIN)/.installed

run: install
	MARCO_DATA_DIR=$(DEMO_DATA) $(BIN)/marco-svc db upgrade
	MARCO_DATA_DIR=$(DEMO_DATA) $(BIN)/marco-svc demo --drops 1
	@# exit 3: some files failed (recorded with their reason); the others are stored
	@if [ -d "$(SHARED_PLATE)" ]; then \
	  MARCO_DATA_DIR=$(DEMO_DATA) MARCO_IMAGE_ROOTS="$(SHARED_PLATE)" \
	  $(BIN)/marco-svc ingest "$(SHARED_PLATE)" || [ $$? -eq 3 ]; fi
	@mkdir -p $(DEMO_DATA)/inbox
	@echo "Open http://$(HOST):$(PORT)/ ; drop imager folders into $(DEMO_DATA)/inbox"
	MARCO_DATA_DIR=$(DEMO_DATA) MARCO_WATCH_ROOTS=$(DEMO_DATA)/inbox \
	  MARCO_IMAGE_ROOTS="$(SHARED_PLATE)" $(BIN)/marco-svc serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Re-train the shipped default model (synthetic drops only; ~45 min on 2 CPU cores).
default-model: install
	rm -rf models/default/1 var/default-model/stage1
	MARCO_DATA_DIR=$(CURDIR)/var/default-model $(BIN)/marco-svc train models/presets/default.toml \
	  --out var/default-model/stage1 --no-register
	MARCO_DATA_DIR=$(CURDIR)/var/default-model $(BIN)/marco-svc train \
	  models/presets/default-focus.toml --out models/default/1 --no-register
	@if [ -d "$(SHARED_PLATE)" ]; then $(BIN)/marco-svc models check-plate models/default/1 \
	  "$(SHARED_PLATE)" --record; fi

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
