"""The benchmarks: each one a module that runs, returns its results as data, and renders them as a table
(text); ``recsys-emb bench NAME``, ``recsys-emb demo`` and the scripts in ``bench/`` print what they return.

- :mod:`~recsys_emb.benchmarks.common`: interleaved timing, README blocks, command lines, the
  Criteo-shaped workload (cardinalities, skewed batches, every variant's specs).
- :mod:`~recsys_emb.benchmarks.demo`: every variant's memory and one fused step (``recsys-emb demo``).
- :mod:`~recsys_emb.benchmarks.embedding_throughput`: embeddings-only train step against TorchRec.
- :mod:`~recsys_emb.benchmarks.lookup_throughput`: the single-device table-batched kernel against one
  ``nn.EmbeddingBag`` per field.
- :mod:`~recsys_emb.benchmarks.train_throughput`: end-to-end DLRM training against TorchRec's DLRM.
- :mod:`~recsys_emb.benchmarks.data_throughput`: Parquet batches per second, generation and preprocessing.
- :mod:`~recsys_emb.benchmarks.nproc_throughput`: training on 1 against N processes.
- :mod:`~recsys_emb.benchmarks.gpu_train`: end-to-end DLRM training on one GPU (table-batched kernel,
  float32 and bf16 autocast).
- :mod:`~recsys_emb.benchmarks.search_dims`: searched per-field dims against the best uniform dim.
- :mod:`~recsys_emb.benchmarks.din_attention`: DIN's attention against sum pooling, beside a logistic regression.
- :mod:`~recsys_emb.benchmarks.din_dare`: DIN with decoupled embeddings (DARE) against the coupled DIN.
- :mod:`~recsys_emb.benchmarks.cli_startup`: start-up of ``recsys-emb --version`` and every ``--help``.
- :mod:`~recsys_emb.benchmarks.quality`: test AUC of every variant at parameter budgets (a package:
  the runs, the sections, the report).

Every module has a ``main(argv) -> str`` that parses the script's arguments, runs, writes the README
block and JSON it is asked for, and returns the text to print.
"""

from typing import List

__all__: List[str] = []
