"""The one-shot (supernet) dimension search against uniform dims at one budget, on generated Criteo-like data
(:mod:`recsys_emb.benchmarks.search_supernet`). Writes the table into models/dlrm/README.md.

    .venv/bin/python bench/search_supernet.py            # ~5 trainings; 10 min on 2 idle CPU cores
    .venv/bin/python bench/search_supernet.py --quick    # CI-sized (seconds), checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.search_supernet import main

if __name__ == "__main__":
    quiet()
    print(main())
