"""Scoring throughput: samples/s of ``predict`` from raw Criteo TSV and from processed Parquet against the
eager model's forward on the same rows (:mod:`recsys_emb.benchmarks.predict_throughput`).

    .venv/bin/python bench/predict.py --rows 200000 --json bench/out/predict.json
"""

from recsys_emb.benchmarks.predict_throughput import main

if __name__ == "__main__":
    print(main())
