"""End-to-end DLRM training throughput (data + model + update) of every variant vs TorchRec's DLRM.

Same as `recsys-emb bench train`; see `--help`. Writes a table and, with --json, a JSON file.
"""

from recsys_emb.benchmarks import run_as_script
from recsys_emb.benchmarks.train_throughput import main

if __name__ == "__main__":
    run_as_script(main)
