# fdshpo developer commands. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fdshpo-installed
PIP_FLAGS := --disable-pip-version-check --progress-bar off

.PHONY: install demo test lint bench bench-quality bench-gpu clean image image-minio docker-engine

install: $(STAMP)

# Reinstalls only when the project's requirements change (a stamp file makes a no-op 0 s).
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/fdshpo run configs/demo.yaml

# The pytest script, not `python -m pytest`: the latter puts the checkout root on sys.path, where
# the top-level docker/ folder shadows the `docker` module that kfp.local probes for.
test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/engine.py
	$(PY) bench/data.py

# FDS vs every baseline at budgets of 2, 4, 8 and 16 final-job runs
# (configs/bench-cpu-fmnist-mlp.yaml: full Fashion-MNIST, MLP, 3 seeds; about an hour on 2 CPU
# cores: the recorded run took 58 min, bench/results/quality-cpu-fmnist-mlp.md);
# a rerun resumes from $(QUALITY_OUT)/partial.jsonl.
# QUALITY_ARGS='--predict' measures and prints the predicted wall time instead (~1 min).
QUALITY_CONFIG ?= configs/bench-cpu-fmnist-mlp.yaml
QUALITY_OUT    ?= bench-out/quality-cpu-fmnist-mlp
QUALITY_ARGS   ?= --record bench/results/quality-cpu-fmnist-mlp
bench-quality: install
	$(PY) bench/quality.py $(QUALITY_CONFIG) --out $(QUALITY_OUT) $(QUALITY_ARGS)

# WRN-16-1 step, tangent and memory cost on a GPU (1-2 min).
bench-gpu: install
	$(PY) bench/gpu.py --out bench/results/gpu-run.json

# The component images (GPU and CPU), tagged with fdshpo.image.component_image(gpu=True/False).
# Needs a running Docker engine; DOCKER=podman works too.
DOCKER ?= docker
IMAGE_TAGS = $(shell env -u FDSHPO_IMAGE $(PY) -c "from fdshpo.image import component_image as c; print(c(gpu=True), c(gpu=False))")
image: install docker-engine
	$(DOCKER) build -f docker/Dockerfile -t $(word 1,$(IMAGE_TAGS)) .
	$(DOCKER) build -f docker/Dockerfile --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t $(word 2,$(IMAGE_TAGS)) .

# The in-cluster store's MinIO, built from source at the release pinned in docker/minio.Dockerfile
# (MinIO publishes no images since October 2025).
MINIO_RELEASE = $(shell sed -n 's/^ARG MINIO_RELEASE=//p' docker/minio.Dockerfile)
image-minio: docker-engine
	$(DOCKER) build -f docker/minio.Dockerfile -t ghcr.io/fdshpo/minio:$(MINIO_RELEASE) docker

docker-engine:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make image: no Docker engine reachable here ('$(DOCKER) info' failed); build on a machine with Docker (README: Deploy on Kubernetes)" >&2; exit 1; }

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
