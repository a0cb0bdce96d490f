"""The data commands of ``recsys-emb``: ``generate {criteo-like,sequences,movielens}``, ``preprocess``
and ``data ceiling``. Registered on the main parser by :func:`add_data_commands`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Union

from recsys_emb.cli.table import add_schema_arguments
from recsys_emb.errors import RecsysEmbError

__all__ = ["add_data_commands"]

_OVERWRITE_HELP = "replace a non-empty output directory whole (without it, one is refused)"


@contextmanager
def _bar(total: Optional[int], desc: str, enabled: bool) -> Iterator[Callable[..., None]]:
    """A tqdm bar fed with absolute positions; a no-op when off (not a TTY, or ``--no-progress``)."""
    if not enabled:
        yield lambda *a: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="rows", unit_scale=True, file=sys.stderr)
    state = {"phase": None}

    def update(*args: Any) -> None:
        phase, pos = (args if len(args) == 2 else (None, args[0]))
        if phase != state["phase"]:
            state["phase"] = phase
            bar.reset(total=total)
            bar.set_description(f"{desc} {phase}" if phase else desc)
        bar.n = pos
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _one_line_errors(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A data command whose library errors (bad input, a used output directory, a missing file) print as
    one line ``error: ...`` on stderr with exit code 2; ``-v`` adds the traceback."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except (RecsysEmbError, ValueError, OSError) as e:
            shown: BaseException = e
            if isinstance(e, OSError) and not isinstance(e, (RecsysEmbError, FileNotFoundError)):
                from recsys_emb.data.outdir import WRITE_ERRNOS, write_error

                if e.errno not in WRITE_ERRNOS:
                    raise
                shown = write_error(getattr(args, "out", None) or e.filename or args.command, e, args.command)
            if getattr(args, "verbose", 0):
                traceback.print_exc()
            print(f"error: {' '.join(str(shown).split())}", file=sys.stderr)
            return 2

    return run


def _min_count(text: str) -> Union[int, str]:
    """``--min-count``: ``auto`` or an int >= 1 (argparse turns the ValueError into ``error: ...``, exit 2)."""
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_min_count.__name__ = "min count (auto or an int >= 1)"


def _chunk_bytes(chunk_mb: float) -> int:
    """Bytes of ``--chunk-mb``, refused unless at least one byte."""
    n = int(chunk_mb * (1 << 20)) if 0 < chunk_mb < (1 << 20) else 0  # NaN and infinity too
    if n < 1:
        raise ValueError(f"--chunk-mb {chunk_mb:g}: the MiB read per block must be > 0 (default 8; a block of a "
                         "few MiB keeps memory bounded and the parse fast)")
    return n


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


@_one_line_errors
def _cmd_generate_criteo_like(args: argparse.Namespace) -> int:
    from recsys_emb.data.synthetic import generate_criteo_like

    with _bar(args.rows, "generate", _progress(args)) as tick:
        g = generate_criteo_like(args.out, args.rows, scale=args.scale, seed=args.seed, gzip=args.gzip, progress=tick,
                                 overwrite=args.overwrite)
    print(f"wrote {g.rows:,} rows to {g.tsv} in {g.seconds:.1f}s ({g.rows / g.seconds:,.0f} rows/s); "
          f"positive rate {g.positive_rate:.4f}")
    print(f"true probabilities: {g.true_prob}; world: {g.info}")
    print(f"next: recsys-emb preprocess --input {g.tsv} --out {args.out.rstrip('/')}-processed")
    return 0


@_one_line_errors
def _cmd_generate_avazu_like(args: argparse.Namespace) -> int:
    from recsys_emb.data.avazu_like import generate_avazu_like

    g = generate_avazu_like(args.out, args.rows, scale=args.scale, seed=args.seed, gzip=args.gzip,
                            overwrite=args.overwrite)
    print(f"wrote {g.rows:,} rows to {g.csv} in {g.seconds:.1f}s; positive rate {g.positive_rate:.4f}; "
          f"true probabilities: {g.true_prob}")
    print(f"next: recsys-emb preprocess --schema configs/schemas/avazu.yaml --input {g.csv} "
          f"--out {args.out.rstrip('/')}-processed")
    return 0


@_one_line_errors
def _cmd_generate_sequences(args: argparse.Namespace) -> int:
    from recsys_emb.data.sequences import SequenceConfig, generate_sequences

    cfg = SequenceConfig(users=args.users, items=args.items, categories=args.categories, max_len=args.max_len,
                         seed=args.seed)
    with _bar(args.rows, "generate", _progress(args)) as tick:
        meta = generate_sequences(args.out, args.rows, config=cfg, test_fraction=args.test_fraction, progress=tick,
                                  overwrite=args.overwrite)
    print(f"wrote {meta['rows']} examples to {args.out} in {meta['seconds']:.1f}s; "
          f"positive rate {meta['positive_rate']:.4f}")
    return 0


@_one_line_errors
def _cmd_generate_movielens(args: argparse.Namespace) -> int:
    from recsys_emb.data.movielens import prepare_movielens

    meta = prepare_movielens(args.out, args.src, rating_threshold=args.threshold, max_len=args.max_len,
                             test_fraction=args.test_fraction, min_history=args.min_history, history=args.history,
                             overwrite=args.overwrite)
    print(f"wrote MovieLens CTR set {meta['rows']} to {args.out} (positive rate {meta['positive_rate']}); "
          "GroupLens licence: research use only, see datasets/movielens.md")
    return 0


@_one_line_errors
def _cmd_preprocess(args: argparse.Namespace) -> int:
    if args.schema is not None or args.valid or args.test:
        from recsys_emb.cli.table import preprocess_with_schema

        if args.schema is None:
            raise ValueError("--valid / --test need --schema (a schema file of the table)")
        return preprocess_with_schema(args)
    from recsys_emb.data.criteo import preprocess

    with _bar(None, "preprocess", _progress(args)) as tick:
        meta = preprocess(args.input, args.out, min_count=args.min_count, test_fraction=args.test_fraction,
                          valid_fraction=args.valid_fraction, on_bad_line=args.on_bad_line,
                          chunk_bytes=_chunk_bytes(args.chunk_mb), rows_per_shard=args.rows_per_shard,
                          vocab_from=args.vocab_from, missing_flags=args.missing_flags, progress=tick,
                          overwrite=args.overwrite, vocab=args.vocab, workers=args.workers,
                          unit_bytes=int(args.unit_mb * (1 << 20)), engine=args.engine, address=args.address,
                          parse_cache={"auto": None, "on": True, "off": False}[args.parse_cache])
    bad = meta["bad_lines"]
    print(f"{meta['rows']['total']:,} rows -> {args.out} "
          f"(train {meta['rows']['train']:,}, valid {meta['rows']['valid']:,}, test {meta['rows']['test']:,}) "
          f"in {meta['seconds']:.1f}s")
    if args.vocab is None:
        print(f"min count {meta['min_count']}" + (" (auto)" if args.min_count == "auto" else ""))
    print("vocab sizes: " + ", ".join(f"{k}={v}" for k, v in meta["vocab_sizes"].items()))
    if args.vocab:
        unseen = {k: v for k, v in meta["oov_rows"].items() if v}
        print(f"vocabulary of {args.vocab}; values mapped to the OOV id (unseen, or rarer than its min_count): "
              + (", ".join(f"{k}={v:,}" for k, v in unseen.items()) if unseen else "none"))
    if bad["bad_lines"]:
        print(f"skipped {bad['bad_lines']:,} malformed lines: {bad['by_reason']}")
        for ex in bad["examples"][:20]:
            print(f"  {ex['path']}:{ex['line']}: {ex['reason']}")
        if bad["bad_lines"] > 20:
            print(f"  ... all kept line numbers (up to {len(bad['examples'])}) are in {args.out}/metadata.json")
    else:
        print("malformed lines: 0")
    for t in bad.get("truncated", []):
        print(f"warning: {t['path']}: {t['error']}: lost everything after line {t['last_good_line']} "
              "(the rows before it are kept)")
    return 0


@_one_line_errors
def _cmd_ceiling(args: argparse.Namespace) -> int:
    from recsys_emb.data.metrics import ceiling_from_dir

    c = ceiling_from_dir(args.dir, split=args.split, test_fraction=args.test_fraction)
    if args.json:
        print(json.dumps(c.to_dict(), indent=2))
    else:
        print(f"ceiling of {args.dir} [{args.split}] ({c.rows:,} rows, positive rate {c.positive_rate:.4f})")
        print(f"  Bayes-optimal AUC      {c.auc:.4f}   (expected over label noise {c.expected_auc:.4f})")
        print(f"  Bayes-optimal log loss {c.logloss:.4f}   (expected over label noise {c.expected_logloss:.4f})")
    return 0


def add_data_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``generate``, ``preprocess`` and ``data`` on the main parser's subparsers; each leaf sets
    ``func(args) -> int``.

    Example:
        >>> p = argparse.ArgumentParser(); add_data_commands(p.add_subparsers(dest="command"))
        >>> p.parse_args(["data", "ceiling", "d"]).split
        'test'
    """
    gen = subparsers.add_parser("generate", help="generate synthetic data with ground truth, or prepare MovieLens")
    gsub = gen.add_subparsers(dest="generate_command", required=True)

    cl = gsub.add_parser("criteo-like", help="Criteo Kaggle-schema TSV from a planted model, with true probabilities")
    cl.add_argument("--rows", type=int, required=True)
    cl.add_argument("--out", required=True, help="output directory")
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--scale", type=float, default=0.01,
                    help="cardinalities = Criteo Kaggle's times this (1.0 = real sizes; default 0.01)")
    cl.add_argument("--gzip", action="store_true", help="write criteo_like.tsv.gz")
    cl.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    cl.add_argument("--no-progress", action="store_true")
    cl.set_defaults(func=_cmd_generate_criteo_like)

    av = gsub.add_parser("avazu-like", help="Avazu-shaped CSV (header, 24 columns) from a planted model, with "
                                            "true probabilities")
    av.add_argument("--rows", type=int, required=True)
    av.add_argument("--out", required=True, help="output directory")
    av.add_argument("--seed", type=int, default=0)
    av.add_argument("--scale", type=float, default=0.01,
                    help="cardinalities above 1000 = Avazu's times this (default 0.01)")
    av.add_argument("--gzip", action="store_true", help="write avazu_like.csv.gz")
    av.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    av.set_defaults(func=_cmd_generate_avazu_like)

    sq = gsub.add_parser("sequences", help="DIN behaviour-sequence examples (Parquet) with true probabilities")
    sq.add_argument("--rows", type=int, required=True)
    sq.add_argument("--out", required=True)
    sq.add_argument("--seed", type=int, default=0)
    sq.add_argument("--max-len", type=int, default=50)
    sq.add_argument("--users", type=int, default=20_000)
    sq.add_argument("--items", type=int, default=50_000)
    sq.add_argument("--categories", type=int, default=500)
    sq.add_argument("--test-fraction", type=float, default=0.1)
    sq.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    sq.add_argument("--no-progress", action="store_true")
    sq.set_defaults(func=_cmd_generate_sequences)

    ml = gsub.add_parser("movielens", help="MovieLens latest-small as a time-split CTR set with histories")
    ml.add_argument("--out", required=True)
    ml.add_argument("--src", default=None, help="ml-latest-small directory (default: $RECSYS_EMB_DATA_DIR or "
                                                "../shared/data/ml-latest-small beside the repository)")
    ml.add_argument("--threshold", type=float, default=4.0, help="label = rating >= threshold")
    ml.add_argument("--max-len", type=int, default=50)
    ml.add_argument("--test-fraction", type=float, default=0.1)
    ml.add_argument("--min-history", type=int, default=0)
    ml.add_argument("--history", choices=["rated", "liked"], default="rated",
                    help="behaviours: every earlier rating (rated) or the earlier positives only (liked)")
    ml.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    ml.set_defaults(func=_cmd_generate_movielens)

    pp = subparsers.add_parser("preprocess", help="Criteo TSV, or any CSV / TSV / Parquet with --schema, -> "
                                                  "categorified Parquet splits")
    pp.add_argument("--input", nargs="+", required=True,
                    help="files, glob patterns or a directory of day_0 .. day_23 (Criteo 1TB), in time order")
    pp.add_argument("--out", required=True)
    pp.add_argument("--min-count", type=_min_count, default="auto",
                    help="ids seen fewer times in the training rows map to the field's OOV id; auto (default): 2 "
                         "below 10,000 training rows, else 1 (docs/training.md)")
    pp.add_argument("--test-fraction", type=float, default=0.1)
    pp.add_argument("--valid-fraction", type=float, default=None, help="default: same as --test-fraction")
    pp.add_argument("--on-bad-line", choices=["error", "skip"], default="error")
    pp.add_argument("--chunk-mb", type=float, default=8.0, help="bytes read per block (memory bound)")
    pp.add_argument("--rows-per-shard", type=int, default=1 << 21)
    pp.add_argument("--workers", type=int, default=None,
                    help="worker processes (default: every core this process may use); the output is the same for any")
    pp.add_argument("--engine", choices=["process", "ray"], default="process",
                    help="what runs the work units: a pool of --workers processes, or Ray tasks (re-run if their "
                         "worker dies; pip install 'recsys_emb[ray]'); the output is the same byte for byte")
    pp.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="with --engine ray: an existing Ray cluster's head (or 'auto'); every machine must see "
                         "--input and --out at the same paths. Default: a local cluster of --workers CPUs")
    pp.add_argument("--unit-mb", type=float, default=256.0,
                    help="MiB of a plain input file per work unit (a .gz file is one unit)")
    pp.add_argument("--parse-cache", choices=["auto", "on", "off"], default="auto",
                    help="keep the parsed rows of pass 1 on disk (about 0.7x the text) for passes 2 and 3; "
                         "auto: when the output's disk has room for twice that")
    pp.add_argument("--vocab-from", choices=["train", "all"], default="train")
    pp.add_argument("--missing-flags", action="store_true",
                    help="also write M1..M13 missing flags (1 where I<i> is empty), dense inputs of the model "
                         "beside I1..I13: they tell a missing count from a count of 0")
    pp.add_argument("--vocab", default=None, metavar="DIR",
                    help="map with this vocabulary instead of counting one: a model directory or a processed "
                         "dataset (a new day gets the ids a model was trained with; --min-count is unused)")
    pp.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    pp.add_argument("--no-progress", action="store_true")
    add_schema_arguments(pp)
    pp.set_defaults(func=_cmd_preprocess)

    data = subparsers.add_parser("data", help="dataset tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    ce = dsub.add_parser("ceiling", help="Bayes-optimal AUC / log loss of a split from the true probabilities")
    ce.add_argument("dir", help="processed directory (or a raw `generate criteo-like` directory)")
    ce.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ce.add_argument("--test-fraction", type=float, default=0.1, help="for a raw generated directory only")
    ce.add_argument("--json", action="store_true")
    ce.set_defaults(func=_cmd_ceiling)
