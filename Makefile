# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED_PLATE := $(CURDIR)/../shared/data/formulatrix_90j8
SHARED_CRYSTALS := $(CURDIR)/../shared/data/chimp_crystal_refs
HOST ?= $(or $(MARCO_HOST),127.0.0.1)
PORT ?= $(or $(MARCO_PORT),8080)
# `make run` keeps its data where every `marco-svc` command looks (MARCO_DATA_DIR, else the
# per-user data folder), so `marco-svc plates list` afterwards sees the demo plate.
DATA_DIR = $(shell $(BIN)/python -c \
  "from marco_svc.config import load_settings; print(load_settings().resolved_data_dir)")

.PHONY: install install-server run test lint bench clean default-model

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]"
	touch $@ $(BIN)/.installed-server

# The service alone (no test tools), for `make run`.
$(BIN)/.installed-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[server]"
	touch $@

install: $(BIN)/.installed
install-server: $(BIN)/.installed-server

run: install-server
	$(BIN)/marco-svc db upgrade
	@# the demo plate is rendered once; later runs keep it
	@[ -d "$(DATA_DIR)/demo" ] || $(BIN)/marco-svc demo --drops 1
	@# exit 3: some files failed (recorded with their reason); the others are stored
	@if [ -d "$(SHARED_PLATE)" ]; then \
	  MARCO_IMAGE_ROOTS="$(SHARED_PLATE)" \
	  $(BIN)/marco-svc ingest "$(SHARED_PLATE)" || [ $$? -eq 3 ]; fi
	@mkdir -p "$(DATA_DIR)/inbox"
	@echo "data in $(DATA_DIR); drop imager folders into $(DATA_DIR)/inbox"
	@# a fresh sign-in token for the page each run (the previous make-run token is revoked)
	@$(BIN)/marco-svc tokens revoke make-run >/dev/null 2>&1 || true
	@echo "open http://$(HOST):$(PORT)/ and sign in with this scientist token:"
	@$(BIN)/marco-svc tokens create --role scientist --name make-run 2>/dev/null | tail -1
	MARCO_WATCH_ROOTS="$(DATA_DIR)/inbox" MARCO_IMAGE_ROOTS="$(SHARED_PLATE)" \
	  $(BIN)/marco-svc serve --host $(HOST) --port $(PORT)

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
	cp var/default-model/stage1/history.csv models/default/1/history-stage1.csv
	@if [ -d "$(SHARED_PLATE)" ]; then $(BIN)/marco-svc models check-plate models/default/1 \
	  "$(SHARED_PLATE)" --record; fi
	@if [ -d "$(SHARED_CRYSTALS)" ]; then $(BIN)/marco-svc models check-plate models/default/1 \
	  "$(SHARED_CRYSTALS)" --record; fi

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
