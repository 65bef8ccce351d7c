# From `git clone` to masks: `make run` serves the backend on :9090 (PORT), `make test` runs the suite.
# Everything lives in .venv (created here); nothing is installed system-wide except the
# redis-server and docker-compose packages the tests need (apt-get, root only).
#
#   make run                      SAM 2.1 tiny on :9090 (downloads the checkpoint once)
#   SAM_MODEL=mobile_sam make run another model (README: model table)
#   SAM_ENGINE=grabcut make run   weights-free classical GrabCut, no download
#   make test PYTEST_ARGS="-k cache -x"
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 make run   pick torch's build

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := $(shell grep -o '^torch==[^ #]*' requirements.txt)
TORCH_INDEX_URL ?=
SAM_ENGINE ?= sam
SAM_MODEL ?= sam2.1_hiera_tiny
SAM_CHECKPOINT ?=
PYTEST_ARGS ?=
TEST_PACKAGES := redis-server docker-compose

export SAM_ENGINE SAM_MODEL SAM_CHECKPOINT

.PHONY: run test checkpoint bench system-packages clean

run: $(VENV)/.runtime-stamp
	$(BIN)/python -m backend.engines.preflight
	exec $(BIN)/gunicorn -c gunicorn.conf.py _wsgi:app

# The integration tests run a real Label Studio from its own cached venv (installed once, ~5 min),
# the browser test Debian's chromium driven by playwright-core (npm); REQUIRE_LABEL_STUDIO=1
# makes them fail rather than skip if either is missing.
test: $(VENV)/.test-stamp system-packages
	bash tests/integration/install_label_studio.sh
	bash tests/e2e/install_browser.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	REQUIRE_LABEL_STUDIO=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

checkpoint: $(VENV)/.runtime-stamp
	$(BIN)/python -m sam_model.download $(SAM_MODEL)

bench: $(VENV)/.test-stamp
	@for script in bench/*.py; do \
	  echo "== $$script"; $(BIN)/python "$$script" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, alone: its build (CPU or CUDA) is chosen by the index, not by requirements.txt.
$(VENV)/.torch-stamp: | $(BIN)/python
	$(BIN)/pip install '$(TORCH_PIN)' $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	touch $@

$(VENV)/.runtime-stamp: requirements.txt $(VENV)/.torch-stamp
	$(BIN)/pip install -r requirements.txt
	touch $@

# The oracles of SAM 2, SAM-HQ and MobileSAM (test-only) without their dependencies: they
# would replace the CPU torch with a CUDA build. sam2's build needs setuptools in the venv.
$(VENV)/.test-stamp: requirements-test.txt requirements-oracles.txt $(VENV)/.runtime-stamp
	$(BIN)/pip install -r requirements-test.txt
	$(BIN)/pip install setuptools
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-deps --no-build-isolation -r requirements-oracles.txt
	touch $@

# The suite starts real redis-server processes and validates docker/docker-compose.yml.
system-packages:
	@missing=""; \
	for pkg in $(TEST_PACKAGES); do command -v $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing (apt-get)"; \
	  bash tests/apt_install.sh $$missing; \
	else \
	  echo "make test needs$$missing: install it (e.g. sudo apt-get install$$missing) and run again" >&2; \
	  exit 1; \
	fi
