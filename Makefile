# optml — `make help` lists the targets. The two that matter: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

IMAGE ?= optml:latest
IMAGE_GPU ?= optml:latest-gpu
PYTHON ?= python3
VENV := .venv
VENV_SDK2 := .venv-sdk2
# `optml` from this checkout (pip install . puts the same command on PATH); `make image` is `optml build`
# (cli/build.py): one definition of the build for both.
OPTML := $(VENV)/bin/python -m optml.cli
# Extra index for the wheelhouse, for a mirror or private index (the CPU torch comes from
# PyTorch's own index, which image.lock's +cpu label picks).
PIP_EXTRA_INDEX_URL ?=
export PIP_EXTRA_INDEX_URL

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "optml needs Python 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -qq --disable-pip-version-check -r requirements/dev.lock
	touch $@

$(VENV_SDK2)/.installed: requirements/sdk-v2.lock
	$(PYTHON) -m venv $(VENV_SDK2)
	$(VENV_SDK2)/bin/pip install -qq --disable-pip-version-check -r requirements/sdk-v2.lock
	touch $@

.PHONY: venv
venv: $(VENV)/.installed $(VENV_SDK2)/.installed ## create the dev venv (SDK v3) and the SDK v2 venv

.PHONY: wheelhouse
wheelhouse: $(VENV)/.installed ## download the image's pinned wheels for linux/amd64 (for offline builds)
	$(OPTML) build --wheelhouse-only

.PHONY: image
image: $(VENV)/.installed ## build $(IMAGE) for linux/amd64 (falls back to a local Debian base when none can be pulled)
	$(OPTML) build --image $(IMAGE)

.PHONY: image-gpu
image-gpu: $(VENV)/.installed ## build $(IMAGE_GPU): the CUDA build of torch (several GB of wheels)
	$(OPTML) build --gpu --image $(IMAGE_GPU)

.PHONY: gpu-check
gpu-check: $(VENV)/.installed ## on a GPU host: train and serve with $(IMAGE_GPU) on CUDA (fails without a GPU)
	$(VENV)/bin/python tools/gpu_check.py --image $(IMAGE_GPU)

DEMO_SUMMARY := demo-output/summary.json

.PHONY: demo
demo: $(VENV)/.installed image ## train on bundled data in SageMaker local mode, deploy, predict (summary: demo-output/summary.json)
	$(OPTML) train --local --image-uri $(IMAGE) \
		--channel train=data/breast_cancer/train --channel validation=data/breast_cancer/validation \
		--output-path demo-output
	$(OPTML) deploy --local --image-uri $(IMAGE) --summary $(DEMO_SUMMARY) \
		--model-data "$$($(VENV)/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_data"])' $(DEMO_SUMMARY))" \
		--predict-from data/breast_cancer/validation

.PHONY: demo-tune
demo-tune: $(VENV)/.installed image ## a local hyperparameter search on the bundled data (optuna, 6 trials), then the optml tune command for AWS
	$(OPTML) tune --local --image-uri $(IMAGE) --ranges examples/tuning/ranges.json \
		--objective validation:loss --strategy Bayesian --max-jobs 6 --random-seed 1 --hp epochs=10 \
		--channel train=data/breast_cancer/train --channel validation=data/breast_cancer/validation \
		--output-path demo-output/tuning

.PHONY: demo-script
demo-script: $(VENV)/.installed image ## script mode, SDK v3: examples/digits' own train.py with ModelTrainer + SourceCode, then its inference.py on a local endpoint
	$(VENV)/bin/python tools/sagemaker_script_v3.py --image $(IMAGE) --output demo-output/script-v3

.PHONY: demo-script-v2
demo-script-v2: $(VENV_SDK2)/.installed image ## script mode, SDK v2: examples/digits on 2 containers (DDP), then PyTorchModel(inference.py).deploy
	$(VENV_SDK2)/bin/python tools/sagemaker_script_v2.py --image $(IMAGE) --output demo-output/script-v2

.PHONY: test
test: venv image ## run the whole test suite (unit, container, SageMaker local mode v2 and v3)
	OPTML_IMAGE=$(IMAGE) $(VENV)/bin/pytest

.PHONY: test-quick
test-quick: $(VENV)/.installed ## unit tests only: no Docker needed
	$(VENV)/bin/pytest -m "not docker and not localmode"

.PHONY: lint
lint: $(VENV)/.installed ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: metric-definitions
metric-definitions: ## print the MetricDefinitions JSON for an Estimator / ModelTrainer
	docker run --rm $(IMAGE) metric-definitions

.PHONY: clean
clean: ## remove venvs, wheelhouse and demo output (not the image)
	rm -rf $(VENV) $(VENV_SDK2) wheelhouse demo-output .pytest_cache .mypy_cache .ruff_cache
