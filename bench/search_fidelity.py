"""The fidelity of the per-trial search: how well short trials rank embedding configurations against their
full-recipe runs (:mod:`recsys_emb.benchmarks.search_fidelity`). Writes its tables into docs/search.md.

    .venv/bin/python bench/search_fidelity.py            # 6 full-epoch trainings
    .venv/bin/python bench/search_fidelity.py --quick    # tiny data, checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.search_fidelity import main

if __name__ == "__main__":
    quiet()
    print(main())
