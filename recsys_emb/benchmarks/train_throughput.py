"""End-to-end DLRM training throughput (data loading + forward + backward + both optimizers) of every
embedding variant against TorchRec's own DLRM on the same data, measured in one run.

The baseline is ``torchrec.models.dlrm.DLRM`` over a plain ``EmbeddingBagCollection`` of full tables
(TorchRec's reference model), with the config's MLP sizes, dim, fused embedding optimizer and dense
optimizer. Every variant is our DLRM built from the same config with ``embeddings.variant`` changed.
All are sharded by DistributedModelParallel (world size 1, fused FBGEMM kernels) and read their own
shuffled Parquet batches through the same loader. Steps of all runs are interleaved round by round so
that machine noise hits them alike; the figure per run is the median round.

``--pipelined VARIANT ...`` adds a run per named variant trained through TorchRec's
``TrainPipelineSparseDist`` (:class:`recsys_emb.training.pipeline.SparseDistSteps`, named
``VARIANT+sparse_dist``): each round is one pipeline segment, as between two evaluations of the trainer.

``--cardinalities kaggle`` (or ``1tb``) gives every Criteo field at least its published number of rows, so
the tables have the memory of the full dataset (the Kaggle tables: 33.8M rows, 2.0 GiB at dim 16) while the
ids still come from the data given; a Criteo-like dataset touches fewer distinct rows per batch than the
real one, so the figure is an upper bound of the real data's speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from recsys_emb.benchmarks.common import command_line, write_section

__all__ = ["run", "format_table", "main"]

logger = logging.getLogger(__name__)

QUICK_OVERRIDES = ["data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}", "data.batch_size=512",
                   "model.bottom_mlp=[16, 8]", "model.top_mlp=[16]", "embeddings.dim=8", "embeddings.min_rows=64"]


@dataclass
class _Run:
    name: str
    model: nn.Module
    dense_opt: torch.optim.Optimizer
    batches: Iterator[Any]
    squeeze: bool
    params: int
    times: List[float] = field(default_factory=list)
    rows: int = 0
    pipeline: Any = None  # SparseDistSteps, for the pipelined runs


def _steps(r: "_Run", loss_fn: nn.Module, steps: int) -> int:
    """Rows trained in ``steps`` steps of ``r`` (one pipeline segment for a pipelined run)."""
    if r.pipeline is not None:
        return sum(size for _, size in r.pipeline.run(r.batches, steps, lambda: None))
    return sum(_step(r, loss_fn) for _ in range(steps))


def _endless(loader_factory) -> Iterator[Any]:
    epoch = 0
    while True:
        ds, loader = loader_factory(epoch)
        yield from loader
        epoch += 1


def _step(r: _Run, loss_fn: nn.Module) -> int:
    batch = next(r.batches)
    logits = r.model(batch.dense, batch.sparse)
    if r.squeeze:
        logits = logits.squeeze(-1)
    loss = loss_fn(logits, batch.labels)
    r.dense_opt.zero_grad(set_to_none=True)
    loss.backward()
    r.dense_opt.step()
    return int(batch.labels.shape[0])


def _sparse_dist(r: _Run) -> Any:
    """TorchRec's sparse-dist pipeline over the run's model, with the plain step's loss."""
    from recsys_emb.training.pipeline import SparseDistSteps

    loss_fn = nn.BCEWithLogitsLoss()

    def step_loss(batch: Any) -> Any:
        loss = loss_fn(r.model(batch.dense, batch.sparse), batch.labels)
        return loss, loss

    return SparseDistSteps(r.model, r.dense_opt, step_loss, torch.device("cpu"))


def _widened(schema: Any, cardinalities: str, data_dir: Any) -> Any:
    """``schema`` with each Criteo field's vocabulary at least its published cardinality."""
    import dataclasses

    from recsys_emb.data.criteo import CAT_COLUMNS
    from recsys_emb.data.criteo.schema import CARDINALITY_PRESETS

    if cardinalities not in CARDINALITY_PRESETS:
        raise ValueError(f"--cardinalities {cardinalities!r} is not a preset; choose one of {sorted(CARDINALITY_PRESETS)}")
    lacking = [c for c in CAT_COLUMNS if c not in schema.vocab_sizes]
    if lacking:
        raise ValueError(f"--cardinalities {cardinalities}: {data_dir} lacks the Criteo fields {lacking[:3]}...; "
                         "give a Criteo-format dataset (recsys-emb preprocess or data.generate kind criteo-like)")
    sizes = dict(schema.vocab_sizes)
    for c, n in zip(CAT_COLUMNS, CARDINALITY_PRESETS[cardinalities]):
        sizes[c] = max(int(sizes[c]), int(n))
    return dataclasses.replace(schema, vocab_sizes=sizes)


def run(config: str, overrides: Sequence[str] = (), variants: Optional[Sequence[str]] = None, steps: int = 20,
        warmup: int = 3, rounds: int = 5, compression: float = 4.0, pipelined: Sequence[str] = (),
        cardinalities: Optional[str] = None) -> Dict[str, Any]:
    """Measure TorchRec's DLRM and ours with each variant; returns settings and one result per run.

    The compressed variants keep about ``1/compression`` of the bytes of the config's large fields
    (preset defaults: QR ``concat``, field-level mixed dimension). ``cardinalities``: a key of
    :data:`~recsys_emb.data.criteo.schema.CARDINALITY_PRESETS`; each field's table gets at least that many
    rows (the data's ids stay as they are).
    """
    from torchrec.models.dlrm import DLRM as TorchRecDLRM
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from recsys_emb.config import config_from_dict, config_to_dict, load_config
    from recsys_emb.data.batches import ParquetBatches, make_dataloader
    from recsys_emb.data.parquet import read_metadata, schema_from_metadata
    from recsys_emb.presets import VARIANTS
    from recsys_emb.sharding import init_single_process_group, shard_model
    from recsys_emb.tables import EmbeddingOptimizer
    from recsys_emb.training import build_features, build_model, prepare_data

    cfg = load_config(config, list(overrides))
    if cfg.model.kind != "dlrm":
        raise ValueError(f"{config}: model.kind={cfg.model.kind!r}; this benchmark compares DLRMs (kind: dlrm)")
    data_dir = prepare_data(cfg)
    schema = schema_from_metadata(read_metadata(data_dir))
    if cardinalities is not None:
        schema = _widened(schema, cardinalities, data_dir)
    if cfg.model.bottom_mlp[-1] != cfg.embeddings.dim:
        raise ValueError(f"model.bottom_mlp ends in {cfg.model.bottom_mlp[-1]} but embeddings.dim={cfg.embeddings.dim}; "
                         "TorchRec's DLRM needs them equal")
    chosen = list(variants or VARIANTS)
    unknown = [v for v in [*chosen, *pipelined] if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    torch.manual_seed(cfg.seed)
    init_single_process_group()
    emb_opt = EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr)
    dense_cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[cfg.optim.dense]

    def loader(seed: int):
        def factory(epoch: int):
            ds = ParquetBatches(data_dir, "train", batch_size=cfg.data.batch_size, shuffle=True, seed=seed)
            ds.set_epoch(epoch)
            return ds, make_dataloader(ds, num_workers=cfg.data.num_workers)
        return _endless(factory)

    def wrap(name: str, model: nn.Module, squeeze: bool) -> _Run:
        dmp = shard_model(model, emb_opt, init_seed=cfg.seed)
        dense = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters()) if p.requires_grad]
        params = sum(p.numel() for p in dense)
        return _Run(name, dmp, dense_cls(dense, lr=cfg.optim.dense_lr), loader(cfg.seed), squeeze, params)

    runs: List[_Run] = []
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{k}", embedding_dim=cfg.embeddings.dim,
                                   num_embeddings=int(schema.vocab_sizes[k]), feature_names=[k]) for k in schema.keys],
        device=torch.device("meta"))
    baseline = TorchRecDLRM(embedding_bag_collection=ebc, dense_in_features=len(schema.dense),
                            dense_arch_layer_sizes=list(cfg.model.bottom_mlp),
                            over_arch_layer_sizes=[*cfg.model.top_mlp, 1])
    runs.append(wrap("torchrec_dlrm", baseline, squeeze=True))
    from recsys_emb.memory import memory_from_specs

    mem: Dict[str, int] = {"torchrec_dlrm": 4 * sum(int(schema.vocab_sizes[k]) * cfg.embeddings.dim for k in schema.keys)}
    for v in [*chosen, *(f"{p}+sparse_dist" for p in pipelined)]:
        v, _, pipe = v.partition("+")
        d = config_to_dict(cfg)
        d["embeddings"]["variant"] = v
        d["embeddings"]["compression"] = 1.0 if v == "full" else compression
        vcfg = config_from_dict(d)
        r = wrap(f"{v}+{pipe}" if pipe else v, build_model(vcfg, schema, embedding_device=torch.device("meta")),
                 squeeze=False)
        if pipe:
            r.pipeline = _sparse_dist(r)
        runs.append(r)
        mem[r.name] = int(memory_from_specs(build_features(vcfg, schema)[0]).bytes)
        logger.info("built %s", v)
    loss_fn = nn.BCEWithLogitsLoss()
    for r in runs:
        _steps(r, loss_fn, warmup)
    for _ in range(rounds):
        for r in runs:
            t0 = time.perf_counter()
            n = _steps(r, loss_fn, steps)
            r.times.append(time.perf_counter() - t0)
            r.rows = n
    base = runs[0].rows / statistics.median(runs[0].times)
    results = []
    for r in runs:
        sps = r.rows / statistics.median(r.times)
        results.append({"variant": r.name, "samples_per_s": round(sps, 1), "ratio_to_torchrec": round(sps / base, 3),
                        "embedding_bytes": mem[r.name], "dense_params": r.params})
    return {"settings": {"config": config, "overrides": list(overrides), "batch_size": cfg.data.batch_size,
                         "dim": cfg.embeddings.dim, "compression": compression, "steps": steps, "rounds": rounds, "warmup": warmup,
                         "num_workers": cfg.data.num_workers, "cardinalities": cardinalities, "threads": torch.get_num_threads(),
                         "embedding_optimizer": cfg.optim.embedding, "dense_optimizer": cfg.optim.dense},
            "results": results}


def format_table(res: Dict[str, Any]) -> str:
    """The results as a text table."""
    s = res["settings"]
    tables = f", tables at the {s['cardinalities']} cardinalities" if s.get("cardinalities") else ""
    lines = [f"DLRM train step incl. data loading, {s['config']}{tables}, batch {s['batch_size']}, dim {s['dim']}, "
             f"compressed variants at 1/{s['compression']:g} bytes, {s['embedding_optimizer']} (fused) + "
             f"{s['dense_optimizer']}, torch threads {s['threads']}, "
             f"median of {s['rounds']} rounds of {s['steps']} steps",
             f"{'model':<16}{'samples/s':>12}{'ratio':>8}{'emb MiB':>10}"]
    for r in res["results"]:
        lines.append(f"{r['variant']:<16}{r['samples_per_s']:>12,.0f}{r['ratio_to_torchrec']:>8.2f}"
                     f"{r['embedding_bytes'] / 2**20:>10.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``--json``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/dlrm_criteo_like_full.yaml", help="a DLRM train config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--pipelined", nargs="*", default=[], metavar="VARIANT",
                   help="also train these variants through TorchRec's TrainPipelineSparseDist")
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compression", type=float, default=4.0, help="bytes kept by the compressed variants: about 1/C")
    p.add_argument("--cardinalities", default=None, choices=["kaggle", "1tb"],
                   help="tables at least as large as the published Criteo cardinalities (ids from the data)")
    p.add_argument("--quick", action="store_true", help="tiny generated data, few steps (format check)")
    p.add_argument("--data-dir", default=None, help="quick mode: where to generate the tiny data")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--readme", default=None, help="also write the table into this README (models/dlrm/README.md)")
    a = p.parse_args(argv)
    overrides = list(a.overrides)
    if a.quick:
        import tempfile

        overrides = [*QUICK_OVERRIDES, f"data.path={a.data_dir or tempfile.mkdtemp(prefix='train_tp_')}/cl", *overrides]
        a.steps, a.rounds = 2, 1
    res = run(a.config, overrides, variants=a.variants, steps=a.steps, rounds=a.rounds, warmup=1 if a.quick else 3,
              compression=a.compression, pipelined=a.pipelined, cardinalities=a.cardinalities)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)
    table = format_table(res)
    if a.readme:
        command = command_line("bench/train_throughput.py", argv)
        write_section(Path(a.readme), "train_throughput", f"```text\n{table}\n```\n\nCommand: `{command}`",
                      "## End-to-end training throughput against TorchRec's DLRM")
    return table
