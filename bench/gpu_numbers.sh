#!/usr/bin/env bash
# The GPU figures of models/dlrm/README.md in one command, on a machine with one CUDA GPU and torch's CUDA
# build (FBGEMM's CUDA build is not needed: both use the plain-PyTorch table-batched kernel):
#   lookup_cuda  bench/lookup_throughput.py --device cuda: the kernel against per-field nn.EmbeddingBag,
#                26 Criteo Kaggle fields at full cardinality, dim 64, batch 65536 (plain PyTorch)
#   train_cuda   bench/gpu_train.py: end-to-end DLRM training, float32 and bf16 autocast (`recsys-emb
#                train`: needs TorchRec and FBGEMM's CPU build; where the machine lacks them, the wheels
#                that bench/device_kit.sh put in .whl/ are installed into a temporary directory first)
# First it checks the device (a GPU visible to PyTorch; prints the versions) and the stack the training
# benchmark needs; without a GPU it stops before measuring anything. When $OUT is set (the device tool),
# the README and both results as JSON are copied there.
# Usage: bash bench/gpu_numbers.sh              (PYTHON=/path/to/python: default .venv/bin/python, else python3)
#        bash bench/gpu_numbers.sh --rehearse   (no GPU needed: the same steps with both benchmarks' --device
#                                                cpu --quick runs, nothing written: checks a machine's setup)
set -euo pipefail
cd "$(dirname "$0")/.."
REHEARSE=0
if [[ "${1:-}" == "--rehearse" ]]; then REHEARSE=1; fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RESULTS=${OUT:-bench/out}
mkdir -p "$RESULTS"

# 1. the device
if [[ $REHEARSE == 0 ]]; then
  "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device is visible to PyTorch ' + torch.__version__ + ': these are GPU figures')"
fi
"$PYTHON" -c "
import platform, torch
print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}')
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'device: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}')
"

# 2. the stack of the training benchmark: the carried wheels where TorchRec is missing
if ! "$PYTHON" -c "import torchrec" >/dev/null 2>&1 && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
  echo "installed into $SITE: $(cd .whl && ls -- *.whl | tr '\n' ' ')"
fi
TRAIN=1
"$PYTHON" -c "from recsys_emb.torch_stack import check_torch_stack; print('stack:', check_torch_stack())" || {
  TRAIN=0
  echo "the training benchmark cannot run here (above); carry the wheels of bench/device_kit.sh in .whl/" >&2
}

# 3. both benchmarks (the lookup one needs plain PyTorch only, so it runs either way; a failure of one
#    does not stop the other, and the exit status is 1 when either failed or was skipped)
STATUS=$(( 1 - TRAIN ))
if [[ $REHEARSE == 1 ]]; then
  "$PYTHON" bench/lookup_throughput.py --device cpu --quick --json "$RESULTS/lookup_rehearsal.json" || STATUS=1
  if [[ $TRAIN == 1 ]]; then
    "$PYTHON" bench/gpu_train.py --device cpu --quick --json "$RESULTS/train_rehearsal.json" || STATUS=1
  fi
else
  "$PYTHON" bench/lookup_throughput.py --device cuda --readme models/dlrm/README.md --json "$RESULTS/lookup_cuda.json" \
    || STATUS=1
  if [[ $TRAIN == 1 ]]; then
    "$PYTHON" bench/gpu_train.py --readme models/dlrm/README.md --json "$RESULTS/train_cuda.json" || STATUS=1
  fi
  if [[ -n "${OUT:-}" ]]; then cp models/dlrm/README.md "$OUT/README.md"; fi
fi
exit $STATUS
