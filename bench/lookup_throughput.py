"""Single-device embedding train step in plain PyTorch (the GPU path): the table-batched kernel vs one
nn.EmbeddingBag(sparse=True) per field. Same as `recsys-emb bench lookup`; see `--help`.

On the GPU machine: `python bench/lookup_throughput.py --device cuda --readme models/dlrm/README.md`
(26 Criteo Kaggle fields at full cardinality, dim 64, batch 65536).
"""

from recsys_emb.runtime import reexec_with_malloc_settings
from recsys_emb.benchmarks.lookup_throughput import main

if __name__ == "__main__":
    reexec_with_malloc_settings()  # glibc reads its malloc settings at start-up only
    print(main(None))
