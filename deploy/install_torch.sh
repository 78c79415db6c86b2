#!/bin/sh
# Install the pinned torch wheel, alone and first, so that nothing after it can swap in another build.
#   sh deploy/install_torch.sh PYTHON [cpu|cuda]        (make install / make install TORCH=cuda / the Dockerfile)
# cpu  (default): torch==2.13.0+cpu, the pin in constraints.txt. Sources, each tried once, briefly:
#      1. a wheel already on this machine (pip's find-links: a wheel folder; the image's deploy/wheels/), no network;
#      2. the PyTorch CPU index ($CSE_TORCH_INDEX to use a mirror), no retries, a short timeout.
#      Neither has it: stop with a message. PyPI's Linux torch is the CUDA build (3 GB with its nvidia-* wheels), so
#      PyPI is never asked for the CPU build and nothing falls back to it.
# cuda: torch==2.13.0 from PyPI (its Linux wheel is the CUDA build), for the precompute job on a GPU box; the pin in
#      constraints-gpu.txt, which any CUDA build of 2.13.0 installed beforehand also satisfies.
set -eu
PY=${1:-python3}
VARIANT=${2:-cpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$VARIANT" in
  cpu) CONSTRAINTS=$ROOT/constraints.txt; INDEX=${CSE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu} ;;
  cuda) CONSTRAINTS=$ROOT/constraints-gpu.txt; INDEX=${CSE_TORCH_INDEX:-https://pypi.org/simple} ;;
  *) echo "error: the torch variant is cpu or cuda, not '$VARIANT'" >&2; exit 2 ;;
esac
SPEC=$(grep -E '^torch==' "$CONSTRAINTS" | head -n 1 | tr -d '[:space:]')
[ -n "$SPEC" ] || { echo "error: $CONSTRAINTS pins no torch==VERSION" >&2; exit 2; }
WANT=${SPEC#torch==}

HAVE=$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true)
case "$VARIANT:$HAVE" in
  "cpu:$WANT") echo "torch $HAVE is installed already"; exit 0 ;;
  "cuda:$WANT"|"cuda:$WANT+cu"*) echo "torch $HAVE is installed already"; exit 0 ;;
esac

if [ "$VARIANT" = cpu ] && "$PY" -m pip install -q --no-deps --no-index "$SPEC" 2>/dev/null; then
  echo "torch $WANT: installed from a wheel on this machine"
  exit 0
fi
# --isolated: pip's own configuration (find-links, extra indexes) cannot offer another build of the same version.
# Another build already installed is replaced: 2.13.0+cpu satisfies torch==2.13.0, so pip alone would keep it.
REPLACE=""
[ -z "$HAVE" ] || REPLACE="--force-reinstall"
if "$PY" -m pip --isolated install -q --no-deps $REPLACE --retries 0 --timeout 30 --index-url "$INDEX" "$SPEC"; then
  echo "torch $WANT: installed from $INDEX"
  exit 0
fi
cat >&2 <<MSG
error: could not install $SPEC.
  Tried: a wheel on this machine (pip's find-links), then $INDEX once.
  Fix one of these:
    - let this machine reach $INDEX (or set CSE_TORCH_INDEX to a mirror of it), or
    - download the wheel elsewhere and put it in a folder pip finds (PIP_FIND_LINKS=/that/folder, or deploy/wheels/
      for the Docker image), or
    - on a GPU box, install the CUDA build instead: make install TORCH=cuda.
  Nothing was installed from PyPI in its place: PyPI's Linux torch is the 3 GB CUDA build.
MSG
exit 1
