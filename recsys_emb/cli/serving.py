"""The serving commands of ``recsys-emb``: ``export`` (a trained run -> a model directory) and ``predict``
(a model directory + new rows -> scores). Registered on the main parser by :func:`add_serving_commands`.
"""

from __future__ import annotations

import argparse
import json
import sys

from recsys_emb.cli.data import _bar, _chunk_bytes, _one_line_errors, _progress

__all__ = ["add_serving_commands"]


@_one_line_errors
def _cmd_export(args: argparse.Namespace) -> int:
    from recsys_emb.model_dir import export_model

    options = {"table_dtype": args.table_dtype} if args.format == "torch-export" else {}
    if args.format != "torch-export" and args.table_dtype != "fp32":
        raise ValueError(f"--table-dtype {args.table_dtype} applies to --format torch-export; a model directory "
                         "keeps the trained fp32 weights")
    out = export_model(args.checkpoint, args.out, format=args.format, overwrite=args.overwrite, **options)
    print(f"wrote {args.format} {out}")
    return 0


@_one_line_errors
def _cmd_predict(args: argparse.Namespace) -> int:
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import predict

    chunk_bytes = _chunk_bytes(args.chunk_mb)
    model = load_model(args.model)
    with _bar(None, "predict", _progress(args)) as tick:
        r = predict(model, args.input, args.out, id_column=args.id_column, on_bad_line=args.on_bad_line,
                    chunk_bytes=chunk_bytes, progress=tick, overwrite=args.overwrite,
                    max_bad_fraction=args.max_bad_fraction)
    if args.json:
        print(json.dumps(r.to_dict(), indent=1))
        return 0
    print(f"scored {r.rows:,} rows ({r.labelled:,} with a label) -> {r.out} in {r.seconds:.1f}s")
    m = r.metrics
    if m is not None:
        auc = f"{m['auc']:.4f}" if m["auc"] is not None else "n/a (one class only)"
        print(f"labelled rows: AUC {auc}  logloss {m['logloss']:.4f}  NE {m['ne']:.4f}  "
              f"(positive rate {m['positive_rate']:.4f})")
    if r.oov:
        unseen = {k: v for k, v in r.oov.items() if v}
        print("values mapped to the OOV id (unseen in training, or rarer than its min_count): "
              + (", ".join(f"{k}={v:,}" for k, v in unseen.items()) if unseen else "none"))
    bad = r.bad_lines
    if bad is not None:
        unit = "rows" if bad["examples"] and "row" in bad["examples"][0] else "lines"
        print(f"malformed {unit} skipped: {bad['bad_lines']:,}" + (f" {bad['by_reason']}" if bad["bad_lines"] else ""))
        for ex in bad["examples"][:20]:
            where = f"{ex['path']}:{ex['line']}" if "line" in ex else f"{ex['path']}: row {ex['row']}"
            print(f"  {where}: {ex['reason']}")
        for t in bad["truncated"]:
            print(f"warning: {t['path']}: {t['error']}: lost everything after line {t['last_good_line']}",
                  file=sys.stderr)
    return 0


EXPORT_FORMAT_NAMES = ("model-dir", "torch-export")
"""The keys of :data:`recsys_emb.model_dir.EXPORT_FORMATS`, named here so that building the parser
(``--help``, ``--version``) does not import the trainer's stack."""


def add_serving_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``export`` and ``predict`` on the main parser's subparsers.

    Example:
        >>> p = argparse.ArgumentParser(); add_serving_commands(p.add_subparsers(dest="command"))
        >>> p.parse_args(["export", "--checkpoint", "runs/a", "--out", "models/a"]).format
        'model-dir'
    """
    ex = subparsers.add_parser("export", help="a trained run -> a self-contained model directory")
    ex.add_argument("--checkpoint", required=True,
                    help="run directory (the model its summary reports) or checkpoint directory, which need the "
                         "run's data; torch-export also takes a model directory")
    ex.add_argument("--out", required=True, help="output directory (e.g. models/NAME)")
    ex.add_argument("--format", choices=EXPORT_FORMAT_NAMES, default="model-dir",
                    help="model-dir: weights (tensors only), specs, config, schema, vocabulary, provenance; "
                         "torch-export: the inference module as a torch.export program (model.pt2, export.json)")
    ex.add_argument("--table-dtype", choices=["fp32", "fp16", "int8"], default="fp32",
                    help="torch-export: how the tables are stored (int8: row-wise, a scale and bias per row)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    ex.set_defaults(func=_cmd_export)

    pr = subparsers.add_parser("predict", help="scores of new rows (raw Criteo TSV or processed Parquet)")
    pr.add_argument("--model", required=True, help="model directory (recsys-emb export, or RUN/model)")
    pr.add_argument("--input", nargs="+", required=True,
                    help="files or globs: Criteo TSV (plain or .gz; 40 columns, or 39 without the label; - or "
                         "/dev/stdin: read from standard input) or processed *.parquet")
    pr.add_argument("--out", required=True, help="scores file (Parquet: file, line|row|ID, label, logit, score)")
    pr.add_argument("--id-column", default=None, help="Parquet input: the column to keep as the row id")
    pr.add_argument("--on-bad-line", choices=["error", "skip"], default="error")
    pr.add_argument("--max-bad-fraction", type=float, default=0.01,
                    help="with --on-bad-line skip: fail, writing nothing, when more than this share of the lines "
                         "(rows) read are malformed (default 0.01; 1 accepts any)")
    pr.add_argument("--chunk-mb", type=float, default=8.0, help="MiB read per block (memory bound)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing scores file")
    pr.add_argument("--json", action="store_true", help="the report as JSON")
    pr.add_argument("--no-progress", action="store_true")
    pr.set_defaults(func=_cmd_predict)
