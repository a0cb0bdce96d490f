"""Sizing on paper: the TorchRec plan of every variant for Criteo Kaggle and Criteo 1TB at 8, 16 and 64
GPUs of 80 GB, from the published cardinalities, on any machine (:mod:`recsys_emb.benchmarks.plan_sizes`).
Writes the table into docs/sharding.md.

    .venv/bin/python bench/plan_sizes.py
"""

from recsys_emb.benchmarks.plan_sizes import main

if __name__ == "__main__":
    print(main())
