"""Searched per-field embedding dims vs the best uniform dim, on generated Criteo-like data
(:mod:`recsys_emb.benchmarks.search_dims`). Writes the table into models/dlrm/README.md.

    .venv/bin/python bench/search_dims.py            # default: ~20 min on 2 CPU cores
    .venv/bin/python bench/search_dims.py --quick    # CI-sized (seconds), checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.search_dims import BEGIN, END, main, write_readme_section  # noqa: F401

if __name__ == "__main__":
    quiet()
    print(main())
