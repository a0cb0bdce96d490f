#!/usr/bin/env bash
# The GPU figures of models/dlrm/README.md in one command, on a machine with one CUDA GPU and torch's CUDA
# build (FBGEMM's CUDA build is not needed: both use the plain-PyTorch table-batched kernel):
#   lookup_cuda  bench/lookup_throughput.py --device cuda: the kernel against per-field nn.EmbeddingBag,
#                26 Criteo Kaggle fields at full cardinality, dim 64, batch 65536
#   train_cuda   bench/gpu_train.py: end-to-end DLRM training, float32 and bf16 autocast
# Usage: bash bench/gpu_numbers.sh   (PYTHON=/path/to/python to use another interpreter than .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device is visible to PyTorch ' + torch.__version__ + ': these are GPU figures')"
"$PYTHON" bench/lookup_throughput.py --device cuda --readme models/dlrm/README.md
"$PYTHON" bench/gpu_train.py --readme models/dlrm/README.md
