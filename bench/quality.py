"""Quality against memory: DLRM with every embedding variant at parameter budgets 1, 1/4, 1/16, 1/64, and
the sections beside it (init, qr-ops, mixed-forms, avazu, dcn, small, families): :mod:`recsys_emb.benchmarks.quality`. Writes the
tables and a plot into models/dlrm/README.md.

    .venv/bin/python bench/quality.py            # every section, 3 seeds a row: hours on 2 CPU cores
    .venv/bin/python bench/quality.py --quick    # CI-sized (tiny data), checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.quality import main

if __name__ == "__main__":
    quiet()
    print(main())
