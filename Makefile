# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: demo test lint bench clean image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## make demo: the AGC ttbar analysis end to end on small synthetic samples (a few minutes on 2 cores):
## make-sample (the nine AGC inputs) -> skim (Parquet training data) -> train (ONNX BDT) -> run (with
## inference) -> fit (pyhf via cabinetry). The configs in processors/ read and write demo-output/.
demo: $(VENV)/.installed
	@test "$(DEMO_DIR)" = demo-output || { echo "make demo: processors/*.yaml use demo-output/; do not set DEMO_DIR"; exit 2; }
	$(BIN)/distproc make-sample --process agc --events 50000 --out $(DEMO_DIR)/samples --seed 1
	$(BIN)/python processors/make_corrections.py processors/data/corrections.json
	$(BIN)/distproc run processors/skim.yaml --output $(DEMO_DIR)/skim
	$(BIN)/python processors/train_assignment.py $(DEMO_DIR)/skim/assignment --out $(DEMO_DIR)/model
	$(BIN)/distproc run processors/agc.yaml --output $(DEMO_DIR)/agc
	$(BIN)/distproc fit $(DEMO_DIR)/agc --config processors/fit.yaml

## make test: install what the tests need and run the whole suite (services are started by the tests).
test: $(VENV)/.installed
	@# pytest exits 5 when it collected no test: say so rather than fail on an empty selection.
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

## make image: the worker image from deploy/Dockerfile with podman (or docker), tagged distproc:VERSION.
## IMAGE=name:tag renames it; BASE_IMAGE=... replaces the base (python:3.11-slim), e.g. a local one.
IMAGE ?=
BASE_IMAGE ?=
image:
	deploy/build_image.sh $(if $(IMAGE),-t $(IMAGE)) $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks processors
	$(BIN)/ruff format --check src tests benchmarks processors

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
