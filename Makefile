SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
REPO   := model_repository

# model:version:architecture - the versions a fresh clone serves; model:version:SOURCE
# (file.py:factory or .pt2) is built with `--from SOURCE` when missing and never committed
MODELS := sentiment:1:bag sentiment:2:cnn digits:1:linear digits:2:cnn \
          embedder:1:examples/embedder.py:servable

.PHONY: help setup system-deps models validate triton run stack test bench clean

help:
	@echo "make run       set up, build missing models, start Triton, Redis and the router (:8080)"
	@echo "make test      set up and run the whole test suite"
	@echo "make models    build any missing model versions ($(MODELS))"
	@echo "make validate  check every config.pbtxt against its model files"
	@echo "make stack     the Compose topology without Docker: nginx (:8080) over 3 routers, Prometheus (:9090)"
	@echo "make bench     measure the router, the cache and dynamic batching (about 6 minutes)"
	@echo "make triton    serve model_repository/ on :8000 (HTTP) :8001 (gRPC) :8002 (metrics)"

system-deps:
	@scripts/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[export,triton,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

setup: system-deps $(STAMP)

models: setup
	@for spec in $(MODELS); do \
	  IFS=: read -r model version arch <<< "$$spec"; \
	  if [ ! -d "$(REPO)/$$model/$$version" ]; then \
	    case "$$arch" in \
	      *:*|*.pt2) $(PY) -m export build "$$model" --version "$$version" --from "$$arch" || exit 1 ;; \
	      *) $(PY) -m export build "$$model" --version "$$version" --arch "$$arch" || exit 1 ;; \
	    esac; \
	  fi; \
	done

validate: setup
	$(PY) -m export validate

triton: models
	$(PY) -m local_triton --model-repository $(REPO)

run: models
	$(PY) -m devstack --model-repository $(REPO)

stack: models
	$(PY) -m devstack --model-repository $(REPO) --replicas 3

test: models
	$(PY) -m export validate
	$(PY) -m pytest

bench: models
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
