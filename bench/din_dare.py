"""DIN with decoupled embeddings (DARE) against the coupled DIN, at equal representation dim and at equal table
bytes, on generated sequences with long histories and on MovieLens, over 3 seeds
(:mod:`recsys_emb.benchmarks.din_dare`). Writes the table into models/din/README.md.

    .venv/bin/python bench/din_dare.py            # 3 seeds, both datasets
    .venv/bin/python bench/din_dare.py --quick    # CI-sized, checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.din_dare import main

if __name__ == "__main__":
    quiet()
    print(main())
