"""Data-path throughput: samples/s of Criteo-schema batches built from Parquet shards on one core, plus
the generation and preprocessing speeds on the way (:mod:`recsys_emb.benchmarks.data_throughput`).

    .venv/bin/python bench/data_throughput.py --rows 1000000 --json bench/out/data_throughput.json
"""

from recsys_emb.benchmarks.data_throughput import main

if __name__ == "__main__":
    print(main())
