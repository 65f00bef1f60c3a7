# Quick start: `make run` (set up + run the default pipeline), `make test` (set up + run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
ARGS   ?=

# No telemetry from MLflow or Prefect.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run test test-all lint format ui prefect-ui serve serve-model bench-corruptions bench-attacks clean help

help:
	@echo "make run    - set up .venv and run the default pipeline (CONFIG=..., ARGS='--set train.epochs=5')"
	@echo "make test   - set up .venv with dev extras and run the test suite"
	@echo "make test-all - also run the tests marked slow"
	@echo "make lint   - ruff check and format check"
	@echo "make ui     - MLflow UI on http://127.0.0.1:5000 for ./mlflow.db (prints the experiment's link)"
	@echo "make prefect-ui - Prefect server and UI on http://127.0.0.1:4200"
	@echo "make serve  - register and serve the pipeline, monitor and retrain deployments (needs make prefect-ui)"
	@echo "make serve-model - the champion's guarded model over HTTP on http://127.0.0.1:5001/invocations"
	@echo "make bench-corruptions - our corruptions vs imagecorruptions, in .venv-bench (ARGS='--n 200')"
	@echo "make bench-attacks - our PGD and AutoAttack-grade ensemble vs torchattacks and ART, in .venv-bench"

# One stamp per install flavour; both reinstall when the pins change.
$(VENV)/.run: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.dev: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.run

run: $(VENV)/.run
	$(BIN)/robustops run --config $(CONFIG) $(ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(ARGS)

test-all: $(VENV)/.dev
	$(BIN)/python -m pytest -m "" $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The printed link opens the experiment in MLflow 3's model-training view (its GenAI view otherwise).
UI_URL := from robustops.config import MlflowConfig; from adapters.tracking import experiment_url; \
  print(experiment_url(MlflowConfig(tracking_uri="sqlite:///mlflow.db")))
ui: $(VENV)/.run
	@echo "MLflow UI: open $$($(BIN)/python -c '$(UI_URL)' 2>/dev/null || echo http://127.0.0.1:5000)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

prefect-ui: $(VENV)/.run
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

# Needs a Prefect server (make prefect-ui) and PREFECT_API_URL=http://127.0.0.1:4200/api.
serve: $(VENV)/.run
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/robustops serve --config $(CONFIG) $(ARGS)

# The champion behind its guard, over HTTP: MLflow's scoring server behind robustops' request limits.
MODEL ?= models:/robustops-digits@champion
serve-model: $(VENV)/.run
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/robustops serve-model --model $(MODEL) --host 127.0.0.1 --port 5001

# A separate venv that sees .venv (with the dev extras) through a .pth file and adds the peer
# libraries the benchmarks compare against, so .venv never gets them.
BENCH  := .venv-bench
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])
PEERS  := imagecorruptions==1.1.2 adversarial-robustness-toolbox==1.20.1

$(BENCH)/.peers: $(VENV)/.dev Makefile
	test -x $(BENCH)/bin/python || $(PYTHON) -m venv $(BENCH)
	PTH="$$($(BENCH)/bin/python -c '$(PURELIB)')/robustops-main-venv.pth" \
	  && $(BIN)/python -c '$(PURELIB)' > "$$PTH" && pwd >> "$$PTH"
	$(BENCH)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt $(PEERS)
	touch $@

bench-corruptions: $(BENCH)/.peers
	$(BENCH)/bin/python benchmarks/corruption_speed.py $(ARGS)

bench-attacks: $(BENCH)/.peers
	$(BENCH)/bin/python benchmarks/attack_speed.py $(ARGS)

clean:
	rm -rf $(VENV) mlflow.db mlartifacts .pytest_cache .ruff_cache
