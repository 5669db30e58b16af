# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## make demo: generate a small sample, run the demo analysis on a LocalCluster, print the summary.
demo: $(VENV)/.installed
	$(BIN)/distproc make-sample --process ttbar --events 200000 --out $(DEMO_DIR)/samples/ttbar --seed 1
	$(BIN)/distproc make-sample --process wjets --events 200000 --out $(DEMO_DIR)/samples/wjets --seed 2
	$(BIN)/python processors/make_corrections.py processors/data/corrections.json
	$(BIN)/distproc run processors/demo.yaml --output $(DEMO_DIR)/result

## make test: install what the tests need and run the whole suite (services are started by the tests).
test: $(VENV)/.installed
	@# pytest exits 5 when it collected no test: say so rather than fail on an empty selection.
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks processors
	$(BIN)/ruff format --check src tests benchmarks processors

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
