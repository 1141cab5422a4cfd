PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench bench-peers clean openapi

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	# Byte-compile once: start-up time matters for the CLI, even where bytecode writing is off.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib carepath pathway states persistence > /dev/null
	# Likewise the JSON copies of the built-in definitions a start reads instead of their YAML.
	$(BIN)/python -c 'import states; states.write_builtin_caches()'
	touch $(STAMP)

demo: install
	$(BIN)/carepath demo

lint: install
	$(BIN)/ruff check carepath pathway states persistence tests bench
	$(BIN)/mypy carepath pathway states persistence tests/typing

test: install lint
	$(BIN)/python -m pytest -q -n 2

# The API's OpenAPI document, checked in; tests/test_openapi.py fails when it drifts from the code.
openapi: install
	$(BIN)/carepath openapi -o openapi.json

bench: install
	$(BIN)/python bench/run.py

# The same workload on carepath and on other Python libraries (bench/peers/README.md); the other
# libraries go into their own venv. PEERS=harel limits the run; PEER_VARIANTS=0 drops the
# synchronous=FULL and harel background rows.
PEERS ?=
bench-peers: install
	PEER_VENV=$(CURDIR)/bench/peers/.venv CAREPATH_PYTHON=$(CURDIR)/$(BIN)/python \
		PEER_VARIANTS=$${PEER_VARIANTS:-1} bench/peers/run_all.sh $(PEERS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
