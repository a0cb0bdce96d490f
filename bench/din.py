"""DIN with attention against DIN with sum pooling, on generated behaviour sequences and on real MovieLens
(:mod:`recsys_emb.benchmarks.din_attention`). Writes the table into models/din/README.md.

    .venv/bin/python bench/din.py            # 500k generated sequences + MovieLens (~10 min on 2 CPU cores)
    .venv/bin/python bench/din.py --quick    # CI-sized, checks the plumbing only
"""

from recsys_emb.benchmarks.common import quiet
from recsys_emb.benchmarks.din_attention import main

if __name__ == "__main__":
    quiet()
    print(main())
