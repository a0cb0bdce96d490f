"""End-to-end DLRM training on one GPU (the table-batched kernel, float32 and bf16 autocast): the
``train_cuda`` block of models/dlrm/README.md (:mod:`recsys_emb.benchmarks.gpu_train`; see `--help`).

    .venv/bin/python bench/gpu_train.py --readme models/dlrm/README.md     # on a machine with a GPU
    .venv/bin/python bench/gpu_train.py --device cpu --quick               # plumbing check, any machine
"""

from recsys_emb.runtime import reexec_with_malloc_settings
from recsys_emb.benchmarks.gpu_train import main

if __name__ == "__main__":
    reexec_with_malloc_settings()  # glibc reads its malloc settings at start-up only
    print(main(None))
