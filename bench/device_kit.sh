#!/usr/bin/env bash
# The wheels bench/gpu_train.py needs on a GPU machine whose image has torch (CUDA build), numpy, pandas,
# pyarrow, PyYAML, scipy, scikit-learn, tqdm, torchmetrics, pyre-extensions and typing-inspect, but no
# TorchRec and no FBGEMM, and no network: downloaded here into .whl/ (ignored by git), carried there, and
# installed by bench/gpu_numbers.sh (or by the line this script prints).
#
#   torchrec        the release paired with that FBGEMM (same major.minor)
#   fbgemm-gpu-cpu  FBGEMM's CPU build (about 6 MB) for that torch: `recsys-emb train` with
#                   train.embedding_backend: table_batched looks tables up in plain PyTorch and calls no
#                   FBGEMM kernel on the GPU; TorchRec only needs fbgemm_gpu to import
#   tensordict      what TorchRec imports beyond the image (its C++ extension links no libtorch), and
#   pyvers          what tensordict imports
# lookup_throughput.py needs none of them (plain PyTorch).
#
# Usage: bash bench/device_kit.sh TORCH_VERSION PYTHON_VERSION     e.g. bash bench/device_kit.sh 2.11 3.12
# (PYTHON=... picks the interpreter whose pip downloads; default .venv/bin/python, else python3.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ne 2 ]]; then
  echo "usage: bash bench/device_kit.sh TORCH_VERSION PYTHON_VERSION   (e.g. 2.11 3.12)" >&2
  exit 2
fi
TORCH_SERIES=$(echo "$1" | cut -d. -f1,2)
PYTHON_VERSION=$2
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# FBGEMM's compatibility table (fbgemm_gpu's _fbgemm_torch_compat_table): each release is built for one
# torch. tensordict: the release of the same season (the project's tested set pairs torch 2.13 with 0.15).
case "$TORCH_SERIES" in
  2.10) FBGEMM=1.5; TENSORDICT=0.12 ;;
  2.11) FBGEMM=1.6; TENSORDICT=0.13 ;;
  2.12) FBGEMM=1.7; TENSORDICT=0.14 ;;
  2.13) FBGEMM=1.8; TENSORDICT=0.15 ;;
  *) echo "error: no FBGEMM release is known for torch $1 here (known: 2.10 to 2.13); add it to the table in $0" >&2
     exit 2 ;;
esac
rm -rf .whl
mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "fbgemm-gpu-cpu==$FBGEMM.*" "torchrec==$FBGEMM.*" "tensordict==$TENSORDICT.*" "pyvers>=0.2,<0.3" \
  2> >(grep -v "^WARNING: Location" >&2)
echo "wheels for torch $TORCH_SERIES, Python $PYTHON_VERSION, in .whl/:"
total=0
for f in .whl/*.whl; do
  size=$(stat -c %s "$f")
  total=$((total + size))
  awk -v n="$(basename "$f")" -v s="$size" 'BEGIN { printf "  %-70s %8.2f MiB\n", n, s / 1048576 }'
done
awk -v s="$total" 'BEGIN { printf "  %-70s %8.2f MiB\n", "total", s / 1048576 }'
if (( total > 48 * 1048576 )); then
  echo "error: the wheels take over 48 MiB; with the working tree they would not fit the 64 MiB a device call carries" >&2
  exit 1
fi
echo "bench/gpu_numbers.sh installs them when TorchRec is missing; by hand, there:"
echo "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:\$PWD"
