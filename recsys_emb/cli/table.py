"""``recsys-emb preprocess --schema SCHEMA``: a user's table (CSV / TSV / Parquet) under a schema file into
a processed dataset (the arguments are registered with ``preprocess`` in :mod:`recsys_emb.cli.data`)."""

from __future__ import annotations

import argparse

__all__ = ["add_schema_arguments", "preprocess_with_schema"]


def add_schema_arguments(pp: argparse.ArgumentParser) -> None:
    """The schema-path arguments of ``preprocess``."""
    pp.add_argument("--schema", default=None, metavar="SCHEMA",
                    help="a schema file (YAML: format, label, categorical, dense, ...; datasets/your-data.md) "
                         "for any CSV / TSV / Parquet table, or a built-in one: criteo (Criteo TSV; --min-count "
                         "and the fractions apply), movielens (--input: the ml-latest-small directory); "
                         "without it, --input is Criteo TSV")
    pp.add_argument("--valid", nargs="+", default=[], metavar="FILE",
                    help="with --schema: files of the validation rows (split by files)")
    pp.add_argument("--test", nargs="+", default=[], metavar="FILE",
                    help="with --schema: files of the test rows (split by files)")


def _movielens(args: argparse.Namespace) -> int:
    """``preprocess --schema movielens --input DIR``: MovieLens through the schema reader."""
    from recsys_emb.data.movielens import prepare_movielens
    from recsys_emb.errors import ConfigError

    if args.valid or args.test or args.vocab or len(args.input) != 1:
        raise ConfigError("--schema movielens reads one --input, the ml-latest-small directory (ratings.csv, "
                          "movies.csv), and splits by time; --valid / --test / --vocab do not apply")
    meta = prepare_movielens(args.out, args.input[0], min_count=args.min_count, test_fraction=args.test_fraction,
                             valid_fraction=args.valid_fraction, overwrite=args.overwrite, workers=args.workers)
    rows = meta["rows"]
    print(f"{rows['total']:,} rows -> {args.out} (train {rows['train']:,}, valid {rows['valid']:,}, "
          f"test {rows['test']:,}; split by time) in {meta['seconds']:.1f}s")
    print("fields: " + ", ".join(f"{k}={v}" for k, v in meta["vocab_sizes"].items())
          + "; GroupLens licence: research use only, see datasets/movielens.md")
    return 0


def preprocess_with_schema(args: argparse.Namespace) -> int:
    """Run ``preprocess --schema`` and print its summary (the CLI prints); library errors propagate
    (printed as one line by the caller)."""
    import dataclasses
    from pathlib import Path

    from recsys_emb.data.tabular import SplitSpec, load_table_spec, preprocess_table

    if args.schema == "movielens" and not Path(args.schema).exists():
        return _movielens(args)
    spec = load_table_spec(args.schema)
    if spec.dataset != "table":  # a built-in reader's options apply as they do to it
        test = args.test_fraction
        spec = dataclasses.replace(spec, min_count=args.min_count, split=SplitSpec(
            valid=test if args.valid_fraction is None else args.valid_fraction, test=test))
    meta = preprocess_table(spec, args.input, args.out, valid=args.valid, test=args.test,
                            on_bad_line=args.on_bad_line, chunk_bytes=int(args.chunk_mb * (1 << 20)),
                            rows_per_shard=args.rows_per_shard, workers=args.workers,
                            unit_bytes=int(args.unit_mb * (1 << 20)), overwrite=args.overwrite, vocab=args.vocab,
                            engine=args.engine, address=args.address)
    rows, bad = meta["rows"], meta["bad_lines"]
    print(f"{rows['total']:,} rows -> {args.out} (train {rows['train']:,}, valid {rows['valid']:,}, "
         f"test {rows['test']:,}; split by {meta.get('split', 'fractions')}) in {meta['seconds']:.1f}s")
    print("fields: " + ", ".join(f"{k}={v}" for k, v in meta["vocab_sizes"].items())
         + (f"; dense: {', '.join(meta['schema']['dense'])}" if meta["schema"]["dense"] else ""))
    if bad["bad_lines"]:
        print(f"skipped {bad['bad_lines']:,} malformed lines: {bad['by_reason']}")
        for ex in bad["examples"][:20]:
            print(f"  {ex['path']}:{ex['line']}: {ex['reason']}")
    else:
        print("malformed lines: 0")
    if args.vocab:
        unseen = {k: v for k, v in meta["oov_rows"].items() if v}
        print(f"vocabulary of {args.vocab}; values mapped to the OOV id: "
              + (", ".join(f"{k}={v:,}" for k, v in unseen.items()) if unseen else "none"))
    return 0
