"""Embeddings-only train-step throughput of every variant vs TorchRec's fused baseline.

Same as `recsys-emb bench embeddings`; see `--help`. Writes a table and, with --json, a JSON file.
"""

from recsys_emb.benchmarks import run_as_script
from recsys_emb.benchmarks.embedding_throughput import main

if __name__ == "__main__":
    run_as_script(main)
