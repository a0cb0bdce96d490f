"""Training throughput of 1 vs N local processes, same global batch
(:mod:`recsys_emb.benchmarks.nproc_throughput`; each run re-executes itself with the malloc settings).
Writes the table into docs/sharding.md.

    .venv/bin/python bench/nproc_throughput.py                 # Criteo-like DLRM, 2M rows (a few minutes)
    .venv/bin/python bench/nproc_throughput.py --quick         # CI-sized, checks the plumbing only
"""

from recsys_emb.benchmarks.nproc_throughput import main

if __name__ == "__main__":
    print(main())
