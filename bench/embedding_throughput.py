"""Embeddings-only train-step throughput of every variant vs TorchRec's fused baseline.

Same as `recsys-emb bench embeddings`; see `--help`. Writes a table and, with --json, a JSON file.
"""

import sys

from recsys_emb.benchmarks.embedding_throughput import main
from recsys_emb.cli import emit
from recsys_emb.runtime import reexec_with_malloc_settings

if __name__ == "__main__":
    reexec_with_malloc_settings()
    emit(main())
    sys.exit(0)
