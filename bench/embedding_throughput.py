"""Embeddings-only train-step throughput of every variant vs TorchRec's fused baseline.

Same as `recsys-emb bench embeddings`; see `--help`. Writes a table and, with --json, a JSON file.
"""

from recsys_emb.runtime import reexec_with_malloc_settings
from recsys_emb.benchmarks.embedding_throughput import main

if __name__ == "__main__":
    reexec_with_malloc_settings()  # glibc reads its malloc settings at start-up only
    print(main(None))
