#!/bin/sh
# Trim the image's virtual environment, in the build stage: what no code path of the app or the precompute job
# loads. The image's check (make docker-check) then runs every page, and the final stage imports what the app and
# the demo build import, so a trim too many fails the build or the check, not a user.
#   sh deploy/slim_venv.sh /opt/venv
set -eu
VENV=$1
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# wandb: a TransformerLens dependency that only its training helpers import
"$VENV/bin/python" -m pip uninstall -y -q wandb
cd "$SITE"
# torch: C++ headers, CMake files, C++ test executables and test libraries (torch_shm_manager stays)
rm -rf torch/include torch/share/cmake torch/test
find torch/bin -type f ! -name torch_shm_manager -delete
rm -f torch/lib/libtorchbind_test.so torch/lib/libaoti_custom_ops.so torch/lib/libbackend_with_compiler.so \
      torch/lib/libjitbackend_test.so
# pyarrow (Streamlit's dataframes): headers, tests, Cython sources, Arrow Flight (RPC) and the S3 filesystem
# (pyarrow.fs imports S3 only if present)
rm -rf pyarrow/include pyarrow/tests pyarrow/src
rm -f pyarrow/*flight* pyarrow/libarrow_s3.so* pyarrow/_s3fs.*
find . \( -name "*.pyx" -o -name "*.pxd" \) -delete
# debug symbols of torch's and pyarrow's own libraries (libtorch_cpu.so: 415 MB -> 330 MB). Not the libraries
# that auditwheel vendored into *.libs/ folders (numpy's OpenBLAS): patchelf rewrote those, and strip breaks them
find torch/lib pyarrow -maxdepth 1 -type f \( -name "*.so" -o -name "*.so.*" \) -exec strip --strip-unneeded {} +
# pip and setuptools: nothing installs into the image after this
"$VENV/bin/python" -m pip uninstall -y -q pip setuptools
