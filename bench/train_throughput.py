"""End-to-end DLRM training throughput (data + model + update) of every variant vs TorchRec's DLRM.

Same as `recsys-emb bench train`; see `--help`. Writes a table and, with --json, a JSON file.
"""

from recsys_emb.runtime import reexec_with_malloc_settings
from recsys_emb.benchmarks.train_throughput import main

if __name__ == "__main__":
    reexec_with_malloc_settings()  # glibc reads its malloc settings at start-up only
    print(main(None))
