"""``python -m recsys_emb.cli``: the ``recsys-emb`` command."""

import sys

from recsys_emb.cli import main

sys.exit(main())
