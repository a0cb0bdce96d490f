"""End-to-end DLRM training on one GPU: ``recsys-emb train`` (data loading, forward, backward, both
optimizers; evaluation and checkpoints excluded) on the Criteo-like config with the single-device
table-batched kernel (``train.embedding_backend: table_batched``, plain PyTorch, so it runs where FBGEMM's
CUDA build is missing), in float32 and with the dense part under bf16 autocast
(``train.mixed_precision: bf16``). The figure is the trainer's own ``samples_per_s`` from ``summary.json``.

Writes the ``train_cuda`` block of models/dlrm/README.md. ``--device cpu --quick`` runs the same
commands on a tiny dataset on the CPU, to check the plumbing; it writes no README block::

    .venv/bin/python bench/gpu_train.py --readme models/dlrm/README.md     # on a machine with a GPU
    .venv/bin/python bench/gpu_train.py --device cpu --quick               # plumbing check, any machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recsys_emb.benchmarks.common import REPO, command_line, write_section

__all__ = ["DEFAULT", "run", "format_table", "main"]

DEFAULT: Dict[str, Any] = dict(config="configs/dlrm_criteo_like_full.yaml", steps=100, batch=16384,
                               precisions=("none", "bf16"))

QUICK_SETS = ["data.generate={kind: criteo-like, rows: 3000, scale: 0.001, seed: 0}", "model.bottom_mlp=[16, 8]",
              "model.top_mlp=[16]", "embeddings.dim=8", "embeddings.min_rows=64", "data.eval_batch_size=1500"]


def _train(args: List[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "train", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"recsys-emb train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def run(device: str = "cuda", config: str = DEFAULT["config"], steps: int = DEFAULT["steps"],
        batch: int = DEFAULT["batch"], precisions: Sequence[str] = DEFAULT["precisions"], sets: Sequence[str] = (),
        quick: bool = False, out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Train ``config`` for ``steps`` steps at ``batch`` on ``device`` once per ``train.mixed_precision`` in
    ``precisions``; returns the settings and one row per run (samples/s, valid AUC, steps).

    The runs are ``recsys-emb train`` processes started in the checkout, so relative config paths are
    read from there; the data (generated on first use) is shared by the runs.
    """
    import torch

    work = Path(out_dir or tempfile.mkdtemp(prefix="gpu_train_"))
    sets = list(sets) + ([f"data.path={work / 'data'}", *QUICK_SETS] if quick else [])
    rows = []
    for precision in precisions:
        out = work / f"run-{precision}"
        run_sets = sets + [f"train.device={device}", "train.embedding_backend=table_batched",
                           f"train.mixed_precision={precision}", f"data.batch_size={batch}",
                           f"train.max_steps={steps}", "train.checkpoint_every=0", "train.eval_every=0",
                           "train.progress=false", "train.log_every=0", f"train.out_dir={out}"]
        _train(["--config", config, "--overwrite", *sum((["--set", s] for s in run_sets), [])])
        s = json.loads((out / "summary.json").read_text())
        rows.append({"mixed_precision": precision, "samples_per_s": s["samples_per_s"], "steps": s["steps"],
                     "valid_auc": s["valid"]["auc"], "device": s["device"]})
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    return {"settings": {"device": name, "config": config, "steps": steps, "batch": batch, "torch": torch.__version__,
                         "sets": list(sets)}, "rows": rows}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    s = res["settings"]
    lines = [f"`{s['config']}` trained by `recsys-emb train` with `train.embedding_backend: table_batched` on "
             f"{s['device']}, torch {s['torch']}: {s['steps']} steps at batch {s['batch']:,}, data loading "
             f"included (evaluation excluded). Measured in one run:", "",
             "| train.mixed_precision | samples/s | valid AUC |", "|---|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['mixed_precision']} | {r['samples_per_s']:,.0f} | {r['valid_auc']:.4f} |")
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write the README block (CUDA only); returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny generated data, few steps (plumbing check)")
    p.add_argument("--config", default=DEFAULT["config"])
    p.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT['steps']} (quick: 5)")
    p.add_argument("--batch", type=int, default=None, help=f"default {DEFAULT['batch']} (quick: 256)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out-dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--readme", default=None, help="write the train_cuda block into this README (a CUDA run only)")
    a = p.parse_args(argv)
    if a.readme and (a.device != "cuda" or a.quick):
        raise SystemExit("--readme holds a full CUDA run only; drop --readme for --device cpu or --quick")
    steps = a.steps or (5 if a.quick else DEFAULT["steps"])
    batch = a.batch or (256 if a.quick else DEFAULT["batch"])
    res = run(a.device, a.config, steps, batch, DEFAULT["precisions"], a.set, a.quick, a.out_dir)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    table = format_table(res, command_line("bench/gpu_train.py", argv))
    if a.readme:
        write_section(Path(a.readme), "train_cuda", table, "### End-to-end training on one GPU")
    return table
