"""The `recsys-emb` command line (``python -m recsys_emb.cli``). The CLI is the only part of the library
that prints; the data and search commands live in :mod:`recsys_emb.cli.data` and :mod:`recsys_emb.cli.search`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from recsys_emb.cli.output import emit

__all__ = ["main", "build_parser", "emit"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from recsys_emb.benchmarks.demo import format_table, run_demo

    rows = run_demo(cap=args.cap, dim=args.dim, batch=args.batch, compression=args.compression)
    emit(format_table(rows, cap=args.cap, dim=args.dim, batch=args.batch, compression=args.compression))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "embeddings":
        from recsys_emb.benchmarks.embedding_throughput import main as bench_main
    elif args.what == "train":
        from recsys_emb.benchmarks.train_throughput import main as bench_main
    elif args.what == "lookup":
        from recsys_emb.benchmarks.lookup_throughput import main as bench_main
    elif args.what == "predict":
        from recsys_emb.benchmarks.predict_throughput import main as bench_main
    else:
        raise SystemExit(f"unknown benchmark {args.what!r}")
    emit(bench_main(args.rest))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json
    import os

    from recsys_emb.config import ConfigError, load_config

    cfg = load_config(args.config, args.overrides)  # fails here, before any work, on a bad config
    cfg.check_device()  # and here when the installed stack cannot run train.device (before any process starts)
    if args.nproc > 1 or args.nnodes > 1 or args.rdzv_endpoint:
        if "TORCHELASTIC_RUN_ID" in os.environ:
            raise ConfigError("--nproc/--nnodes inside a torchrun worker: torchrun started the processes already; "
                              "drop --nproc/--nnodes/--rdzv-endpoint there")
        from recsys_emb.training.launch import launch
        from recsys_emb.training.rundir import LOGS_DIR

        worker = ["-m", "recsys_emb.cli", *(["-" + "v" * args.verbose] if args.verbose else []), "train",
                  "--config", args.config, *sum((["--set", o] for o in args.overrides), []),
                  *(["--resume"] if args.resume else []), *(["--json"] if args.json else []),
                  *(["--overwrite"] if args.overwrite else [])]
        return launch(worker, nproc=args.nproc, log_dir=cfg.out_dir / LOGS_DIR, nnodes=args.nnodes,
                      node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint)
    import torch.distributed as dist

    from recsys_emb.training import train

    # progress: a bar on a terminal, else (with -v) one log line per train.log_every steps (schedulers' logs)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if not dist.is_initialized() or dist.get_rank() == 0:
        _print_summary(summary)
        if args.json:
            print(json.dumps(summary, indent=1))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a worker of --nproc or torchrun
        from recsys_emb.training.launch import exit_worker

        dist.barrier()  # every rank done before gloo is torn down
        dist.destroy_process_group()
        exit_worker(0)
    return 0


def _print_summary(s: dict) -> None:
    from recsys_emb.memory import format_bytes

    print(f"{s['name']}: {s['steps']} steps on {s['world_size']} process(es), "
          f"{(s['samples_per_s'] or 0):,.0f} samples/s")
    print(f"embeddings: {s['embedding_params']:,} params, {format_bytes(s['embedding_bytes'])} "
          f"({s['embedding_bytes'] / s['full_table_bytes']:.1%} of full tables); dense params {s['dense_params']:,}")
    for split in ("valid", "test"):
        m = s[split]
        ceiling = (f"   ceiling AUC {m['ceiling_auc']:.4f}, logloss {m['ceiling_logloss']:.4f}"
                   if "ceiling_auc" in m else "")
        print(f"{split:<5} AUC {m['auc']:.4f}  logloss {m['logloss']:.4f}  NE {m['ne']:.4f}{ceiling}")


def _cmd_factorise(args: argparse.Namespace) -> int:
    import json

    from recsys_emb.factorise import factorise_checkpoint

    out = factorise_checkpoint(args.checkpoint, rank=args.rank, min_rows=args.min_rows, split=args.split,
                               finetune_steps=args.finetune_steps, lr=args.lr, batch_size=args.batch_size)
    emit(json.dumps(out, indent=1))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from recsys_emb.serving import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, split=args.split), indent=1))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    import json

    from recsys_emb.config import load_config
    from recsys_emb.memory import format_bytes
    from recsys_emb.training import plan_run

    cfg = load_config(args.config, args.overrides)
    out = plan_run(cfg, args.world_size, args.device, cardinalities=args.cardinalities, hbm_gb=args.hbm_gb)
    if args.json:
        emit(json.dumps({k: v for k, v in out.items() if k != "text"}, indent=1))
        return 0 if out["fits"] else 1
    source = f"{args.cardinalities} cardinalities" if args.cardinalities else f"data {cfg.data.path}"
    memory = f", {format_bytes(out['hbm_bytes'])} HBM per GPU" if out["hbm_bytes"] else ""
    emit(f"{cfg.name}: TorchRec plan for {args.world_size} rank(s) on {args.device}{memory} ({source}, "
         f"sharding types {cfg.train.sharding_types}, bytes = float32 weights + {cfg.optim.embedding} state)")
    emit(out["text"])
    if not out["fits"]:
        return 1
    emit(f"total: {format_bytes(sum(out['rank_bytes']))}; largest rank: {format_bytes(max(out['rank_bytes']))}"
         + (" (fits)" if out["hbm_bytes"] else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from recsys_emb.version import __version__

    p = argparse.ArgumentParser(prog="recsys-emb", description="Memory-efficient embeddings for CTR models.")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v info: training progress lines when stderr is not a terminal, data "
                        "generation, resumes; -vv debug); errors with their traceback")
    p.add_argument("--version", action="version", version=f"recsys-emb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="memory table of every variant + one fused training step each")
    d.add_argument("--cap", type=int, default=1_000_000, help="cap on each field's cardinality")
    d.add_argument("--dim", type=int, default=16)
    d.add_argument("--batch", type=int, default=2048)
    d.add_argument("--compression", type=int, default=4, help="rows kept per large field: 1/compression")
    d.set_defaults(func=_cmd_demo, reexec=True)

    b = sub.add_parser("bench", help="benchmarks (see bench/)")
    b.add_argument("what", choices=["embeddings", "train", "lookup", "predict"],
                   help="embeddings: embeddings-only train step vs TorchRec; train: end-to-end DLRM training "
                        "(data + model + update) vs TorchRec's DLRM; lookup: the single-device plain-PyTorch "
                        "kernel (the GPU path) vs per-field nn.EmbeddingBag; predict: scoring raw TSV and "
                        "Parquet files vs the eager forward")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the benchmark (see --help after it)")
    b.set_defaults(func=_cmd_bench, reexec=True)

    t = sub.add_parser("train", help="train a CTR model from a YAML config")
    t.add_argument("--config", required=True,
                   help="a config file, or a packaged config's name (recsys-emb config list)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set embeddings.variant=qr (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the run's newest intact checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in train.out_dir (a used directory is refused otherwise)")
    t.add_argument("--nproc", type=int, default=1,
                   help="worker processes on this node, started by torchrun's elastic agent (one per GPU with "
                        "train.device: cuda); each rank's output and error file are kept in <out_dir>/logs/")
    t.add_argument("--nnodes", type=int, default=1, help="nodes of a multi-node run (torchrun's --nnodes)")
    t.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0 .. nnodes-1 (torchrun's --node-rank)")
    t.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="node 0's address and a free port, the same on every node (torchrun's --rdzv-endpoint, "
                        "static rendezvous). Plain torchrun works too: torchrun ... -m recsys_emb.cli train ...")
    t.add_argument("--json", action="store_true", help="also print the summary as JSON")
    t.set_defaults(func=_cmd_train, reexec=True)

    pl = sub.add_parser("plan", help="the sharding plan and memory per rank of a config, without training")
    pl.add_argument("--config", required=True,
                    help="configs/NAME.yaml (its data is prepared if missing, unless --cardinalities)")
    pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.sharding_types=[column_wise]")
    pl.add_argument("--world-size", type=int, default=2, help="ranks to plan for")
    pl.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="compute device of the ranks (cuda plans for GPUs on any machine, without one)")
    pl.add_argument("--cardinalities", default=None, choices=["kaggle", "1tb"],
                    help="size the tables from Criteo's published cardinalities (Kaggle 33.8M ids, 1TB 882.8M) "
                         "instead of the config's data, which then need not exist")
    pl.add_argument("--hbm-gb", type=float, default=None,
                    help="memory of each GPU in GB (--device cuda; default TorchRec's); exit 1 if the tables do not fit")
    pl.add_argument("--json", action="store_true", help="the report as JSON")
    pl.set_defaults(func=_cmd_plan, reexec=False)

    e = sub.add_parser("evaluate", help="metrics of a saved checkpoint on a split")
    e.add_argument("--checkpoint", required=True,
                   help="checkpoint directory, or run directory (the model its summary reports, else its latest)")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.set_defaults(func=_cmd_evaluate, reexec=False)

    fa = sub.add_parser("factorise", help="a trained DLRM's full tables by truncated SVD (low rank): metrics before, "
                                          "after and after a short fine-tune")
    fa.add_argument("--checkpoint", required=True,
                    help="checkpoint directory, or run directory (the model its summary reports, else its latest)")
    fa.add_argument("--rank", type=int, required=True, help="rank kept: a multiple of 4 below the tables' dim")
    fa.add_argument("--min-rows", type=int, default=0, help="only tables of at least this many ids")
    fa.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    fa.add_argument("--finetune-steps", type=int, default=0, help="Adam steps of the whole model on the train split")
    fa.add_argument("--lr", type=float, default=1e-4, help="fine-tune learning rate (Adam)")
    fa.add_argument("--batch-size", type=int, default=4096)
    fa.set_defaults(func=_cmd_factorise, reexec=False)

    from recsys_emb.cli.search import add_search_command

    add_search_command(sub)

    from recsys_emb.cli.data import add_data_commands

    add_data_commands(sub)

    from recsys_emb.cli.serving import add_serving_commands

    add_serving_commands(sub)

    from recsys_emb.cli.tools import add_tool_commands

    add_tool_commands(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    # force: importing fbgemm_gpu logs through the root logger, which installs a WARNING handler first
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if getattr(args, "reexec", False) and argv is None:
        from recsys_emb.runtime import reexec_with_malloc_settings

        reexec_with_malloc_settings()
    from recsys_emb.errors import RecsysEmbError

    try:
        return int(args.func(args) or 0)
    except RecsysEmbError as e:
        # the library's errors name the file or key, the value and the fix: one line is the message,
        # the traceback is for -v
        _record_for_launcher(e)
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # a write the environment refused (a full disk, a file size limit, a read-only location): one line
        from recsys_emb.data.outdir import WRITE_ERRNOS, write_error

        _record_for_launcher(e)
        if args.verbose or e.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {write_error(e.filename or args.command, e, args.command)}", file=sys.stderr)
        return 2
    except Exception as e:
        _record_for_launcher(e)
        raise


def _record_for_launcher(error: BaseException) -> None:
    """A worker of ``--nproc`` / torchrun: the error and its traceback into the error file the elastic
    agent reports (nothing to do, and nothing imported, in a plain run)."""
    import os

    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from recsys_emb.training.launch import record_worker_error

        record_worker_error(error)

