"""``recsys-emb config`` (the packaged configs: list them, print one to start a config of one's own) and
``recsys-emb baseline`` (the reference rows a model is checked against, for any preprocessed dataset)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_tool_commands"]


def _description(text: str, width: int = 100) -> str:
    """A config file's first sentence of its leading comment (what it trains), at most ``width`` characters."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    sentence = " ".join(words).split(". ")[0].rstrip(".:")
    return sentence if len(sentence) <= width else sentence[:width - 3].rstrip() + "..."


def _cmd_config(args: argparse.Namespace) -> int:
    from recsys_emb.cli.output import emit
    from recsys_emb.config import ConfigError, packaged_configs, show_config

    if args.action == "show":
        if not args.name:
            raise ConfigError("config show needs the config's name, e.g. `recsys-emb config show demo > my.yaml` "
                              "(`recsys-emb config list` lists them)")
        emit(show_config(args.name).rstrip("\n"))
        return 0
    configs = packaged_configs()
    width = max(len(name) for name in configs)
    for name, path in configs.items():
        emit(f"{name:<{width}}  {_description(path.read_text())}")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from recsys_emb.baselines import baseline_report
    from recsys_emb.cli.output import emit
    from recsys_emb.data.parquet import read_metadata
    from recsys_emb.errors import DataError

    if not (Path(args.data) / "metadata.json").exists():
        raise DataError(f"--data {args.data}: no metadata.json there; give a preprocessed dataset directory "
                        f"(recsys-emb preprocess / generate)")
    report = baseline_report(args.data, splits=args.splits)
    if args.json:
        emit(json.dumps({name: {split: r.to_dict() for split, r in rows.items()} for name, rows in report.items()},
                        indent=1))
        return 0
    rows = read_metadata(Path(args.data)).get("rows", {})
    sizes = ", ".join(f"{s} {rows[s]:,}" for s in ("train", *args.splits) if isinstance(rows.get(s), int))
    lr = next(iter(report["logistic_regression"].values()))
    emit(f"baselines of {args.data} ({sizes} rows); the logistic regression's C={lr.C:g} is chosen on valid")
    emit(f"{'':<21}" + "".join(f"{s + ' AUC':>11}{s + ' logloss':>15}" for s in args.splits))
    for name, label in (("constant", "constant predictor"), ("logistic_regression", "logistic regression")):
        cells = "".join(f"{report[name][s].auc:>11.4f}{report[name][s].logloss:>15.4f}" for s in args.splits)
        emit(f"{label:<21}{cells}")
    return 0


def add_tool_commands(sub: Any) -> None:
    """Add ``config`` and ``baseline`` to the ``recsys-emb`` subcommands."""
    c = sub.add_parser("config", help="the packaged configs: list them, or print one (config show NAME > my.yaml)")
    c.add_argument("action", choices=["list", "show"])
    c.add_argument("name", nargs="?", help="show: the config's name (as `config list` prints it)")
    c.set_defaults(func=_cmd_config, reexec=False)

    b = sub.add_parser("baseline", help="reference rows of a preprocessed dataset: constant predictor and "
                                        "logistic regression, AUC and log loss")
    b.add_argument("--data", required=True, help="a preprocessed dataset directory (with metadata.json)")
    b.add_argument("--splits", nargs="+", default=["valid", "test"], choices=["valid", "test"],
                   help="splits to score (default: valid test)")
    b.add_argument("--json", action="store_true", help="the rows as JSON")
    b.set_defaults(func=_cmd_baseline, reexec=False)
