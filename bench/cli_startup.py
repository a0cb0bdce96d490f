"""How long `recsys-emb --version`, `--help` and every subcommand's `--help` take in fresh processes, next
to a bare interpreter and `import torch` (:mod:`recsys_emb.benchmarks.cli_startup`; see `--help`). Writes
the `cli_startup` block of docs/performance.md:

    .venv/bin/python bench/cli_startup.py --readme docs/performance.md
    .venv/bin/python bench/cli_startup.py --source /path/to/other/checkout     # another tree's package
"""

from recsys_emb.benchmarks.cli_startup import main

if __name__ == "__main__":
    print(main(None))
