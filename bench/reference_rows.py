"""The reference rows (constant predictor, logistic regression) beside every results table of models/*/README.md
(:mod:`recsys_emb.benchmarks.reference_rows`), on the test split each table's models are scored on.

    .venv/bin/python bench/reference_rows.py            # every dataset (about 20 min on 2 CPU cores)
    .venv/bin/python bench/reference_rows.py --quick    # tiny generated data, checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.reference_rows import main

if __name__ == "__main__":
    quiet()
    print(main())
