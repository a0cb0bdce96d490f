"""The quality benchmark's text: the main table with the papers' claims checked on its rows, the plot of
test AUC against bytes, and the tables of the init, qr-ops, mixed-forms and dcn sections (Markdown, as
written into models/dlrm/README.md)."""

from __future__ import annotations

import platform
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recsys_emb.benchmarks.common import format_mb
from recsys_emb.benchmarks.quality.runs import FAMILY_ROWS, VARIANT_ORDER
from recsys_emb.benchmarks.quality.sections import AVAZU_VARIANTS, MIXED_FORMS, QR_OPS
from recsys_emb.benchmarks.quality.storage import STORAGE_DTYPES

__all__ = ["report", "movielens_report", "plot", "init_report", "qr_ops_report", "mixed_forms_report", "avazu_report",
           "dcn_report", "families_report", "families_plot", "HASH_BASED", "FACTORISED"]

HASH_BASED = ("hashed", "unified", "robe")
"""The families section's rows that map ids to shared rows by hashing (the hashing trick, unified's one
multiplexed table, ROBE's hashed blocks), as opposed to :data:`FACTORISED` tables: the grouping of the VLDB
2024 storage-compression benchmark's finding that hash-based methods are strongest at high compression."""
FACTORISED = ("lowrank", "tt")
"""The families section's rows whose rows are products of smaller factors (low-rank, tensor-train)."""


def init_report(res: Dict[str, Any], command: str) -> str:
    """The init section (:func:`~recsys_emb.benchmarks.quality.sections.run_init_sweep`) as Markdown: test AUC per
    variant and scale, the best scale in bold, ``command`` under it."""
    scales = res["scales"]
    head = ["variant (budget)", *["default bound" if s is None else f"U(±{s:g})" for s in scales]]
    lines = ["Test AUC of runs like those of the table above (same data, model, training) with every table drawn from `U(-s, s)` "
             "(`embeddings.init_scale: s`) instead of its default bound (docs/embeddings.md: TorchRec's `1/sqrt(rows)` for a "
             "table read by one feature; for a unified table, the root mean square of the bounds of the per-field tables it "
             "replaces).", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * len(scales)]
    for v in dict.fromkeys(r["variant"] for r in res["rows"]):
        rs = {r["init_scale"]: r for r in res["rows"] if r["variant"] == v}
        best = max(rs.values(), key=lambda r: r["test_auc"])
        cells = [(f"**{rs[s]['test_auc']:.4f}**" if rs[s] is best else f"{rs[s]['test_auc']:.4f}") for s in scales]
        lines.append(f"| {v} ({next(iter(rs.values()))['budget']}) | " + " | ".join(cells) + " |")
    best = {v: max((r for r in res["rows"] if r["variant"] == v), key=lambda r: r["test_auc"])
            for v in dict.fromkeys(r["variant"] for r in res["rows"])}

    def name(r: Dict[str, Any]) -> str:
        return f"{r['variant']} ({r['budget']}, {'default' if r['init_scale'] is None else 'U(±%g)' % r['init_scale']})"

    if "unified" in best and "hashed" in best:
        u, h = best["unified"], best["hashed"]
        d = u["test_auc"] - h["test_auc"]
        lines += ["", f"- Each at its best scale: {name(u)} {u['test_auc']:.4f} vs {name(h)} {h['test_auc']:.4f} "
                  f"({d:+.4f}): unified {'is' if d >= 0 else 'is not'} on the Pareto front against the hashing "
                  "trick at equal parameters."]
        if "full" in best:
            f = best["full"]
            lines.append(f"- {name(u)} {u['test_auc']:.4f} vs full tables {name(f)} {f['test_auc']:.4f} "
                         f"({u['test_auc'] - f['test_auc']:+.4f}) at {u['bytes'] / f['bytes']:.2f}x the bytes.")
    lines += ["", "A fixed bound does not carry over to other dims and table sizes, so it stays an override "
              "(`embeddings.init_scale`); compare variants at their own best scale as well as at the default.",
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def _seed_summary(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and range of test AUC, mean train speed, of one form's seeded runs."""
    aucs = [r["test_auc"] for r in rows]
    return {"mean": sum(aucs) / len(aucs), "range": f"{min(aucs):.4f}-{max(aucs):.4f}",
            "speed": sum(r["samples_per_s"] for r in rows) / len(rows), "first": rows[0]}


def qr_ops_report(res: Dict[str, Any], command: str) -> str:
    """The qr-ops section (:func:`~recsys_emb.benchmarks.quality.sections.run_qr_ops`) as Markdown: each op's
    bytes and mean test AUC over the seeds, ``command`` under it."""
    lines = [f"Quotient-remainder at {res['budget']} of the full tables' bytes with each combining op (the same "
             f"data, model and training as the tables above; seeds {res['seeds']}, test AUC mean and range). "
             "`concat` joins two half-width lookups, so at the same bytes it keeps twice the quotient rows.", "",
             "| op | compression | quotient rows kept | embedding bytes | test AUC | range | train samples/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    means = {}
    for op in QR_OPS:
        sm = _seed_summary([r for r in res["rows"] if r["op"] == op])
        means[op] = sm["mean"]
        first = sm["first"]
        rows_kept = Fraction(2 if op == "concat" else 1) / Fraction(first["compression"]).limit_denominator(1000)
        lines.append(f"| {op} | {first['compression']:g} | {rows_kept} | {format_mb(first['bytes'])} | {sm['mean']:.4f} | "
                     f"{sm['range']} | {sm['speed']:,.0f} |")
    best = max(means, key=means.__getitem__)
    lines += ["", f"- Best at equal bytes: `{best}` ({means[best]:.4f}); "
              + ", ".join(f"`{op}` {means[op] - means[best]:+.4f}" for op in QR_OPS if op != best) + ".",
              "- Speed of the embeddings alone: [`docs/performance.md`](../../docs/performance.md) (`concat` needs no "
              "arithmetic after the lookups; `mult` and `add` do one elementwise pass per field forward and two backward).",
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def mixed_forms_report(res: Dict[str, Any], command: str) -> str:
    """The mixed-forms section (:func:`~recsys_emb.benchmarks.quality.sections.run_mixed_forms`) as Markdown:
    each form's alpha, bytes and mean test AUC per budget, ``command`` under it."""
    lines = [f"Mixed dimension at equal bytes: 4 frequency blocks per field against the field-level form (one table "
             f"per field, dims by DLRM's `md_solver` rule), each with the alpha that fits the budget (the same data, "
             f"model and training as the tables above; seeds {res['seeds']}, test AUC mean and range).", "",
             "| budget | form | num_blocks | alpha | embedding bytes | x full | test AUC | range | train samples/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for budget in res["budgets"]:
        means, nbytes = {}, {}
        for name, _ in MIXED_FORMS:
            rs = [r for r in res["rows"] if r["budget"] == budget and r["form"] == name]
            if not rs:
                lines.append(f"| {budget} | {name} | | | out of reach | | | | |")
                continue
            sm = _seed_summary(rs)
            means[name] = sm["mean"]
            f = sm["first"]
            nbytes[name] = f["bytes"]
            lines.append(f"| {budget} | {name} | {f['num_blocks']} | {f['alpha']:g} | {format_mb(f['bytes'])} | "
                         f"{f['bytes'] / res['full_bytes']:.3f} | {sm['mean']:.4f} | {sm['range']} | {sm['speed']:,.0f} |")
        if len(means) == 2:
            notes.append(f"{budget}: {means['field'] - means['blocks']:+.4f} (field-level at "
                         f"{nbytes['field'] / nbytes['blocks']:.2f}x the blocks' bytes)")
    lines += ["", "- Field-level minus blocks, mean test AUC: " + (", ".join(notes) if notes else "no budget reachable "
              "by both") + ". The field-level dims move in steps of 4, so its bytes jump with alpha and can land "
              "well below the budget.",
              "- Speed of the embeddings alone: [`docs/performance.md`](../../docs/performance.md) (the blocks project "
              "every block of every bag; the field-level form one table per field).", "", f"Command: `{command}`"]
    return "\n".join(lines)


def _auc_bytes_plot(res: Dict[str, Any], path: Path, variants: Sequence[str], title: str,
                    squares: Sequence[str] = (), reference: Optional[float] = None) -> None:
    """Test AUC against embedding bytes (log scale), one line per variant of ``variants`` (``squares``
    drawn with square markers), the ceiling and ``reference`` (the logistic regression's AUC, if given)
    as horizontal lines, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in variants:
        pts = sorted((r["bytes"], r["test_auc"]) for r in res["rows"] if r["variant"] == v and r.get("reachable"))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s" if v in squares else "o", label=v)
    if reference is not None:
        ax.axhline(reference, color="grey", ls=":", lw=1, label="logistic regression")
    if res.get("ceiling_auc"):
        ax.axhline(res["ceiling_auc"], color="k", ls="--", lw=1, label="ceiling (true probabilities)")
    ax.set_xscale("log")
    ax.set_xlabel("embedding parameter bytes (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(res: Dict[str, Any], path: Path) -> None:
    """Test AUC against embedding bytes (log scale), one line per variant of the main section, as a PNG at ``path``."""
    _auc_bytes_plot(res, path, VARIANT_ORDER, "DLRM on Criteo-like data: quality against memory")


def _cell(r: Dict[str, Any], key: str) -> str:
    """A metric of a row: the mean, with the range over its seeds when there are several."""
    per_seed = r.get(f"seed_{key}") or [r[key]]
    if len(per_seed) == 1:
        return f"{r[key]:.4f}"
    return f"{r[key]:.4f} [{min(per_seed):.4f}-{max(per_seed):.4f}]"


def _paired(x: Dict[str, Any], y: Dict[str, Any]) -> List[float]:
    """Test AUC of ``x`` minus ``y``, seed by seed (rows trained with the same seeds)."""
    xs, ys = x.get("seed_test_auc") or [x["test_auc"]], y.get("seed_test_auc") or [y["test_auc"]]
    return [a - b for a, b in zip(xs, ys)]


def _diff(d: List[float]) -> str:
    """A paired difference: its mean, and its range over the seeds when there are several."""
    mean = sum(d) / len(d)
    return f"{mean:+.4f}" + (f" [{min(d):+.4f} to {max(d):+.4f}]" if len(d) > 1 else "")


def _verdicts(res: Dict[str, Any]) -> List[str]:
    """The papers' claims against the measured rows (None where a comparison is missing). With several
    seeds a claim is judged on the mean, and said to hold at every seed only where each seed's paired
    difference agrees: a mean inside the seeds' spread is reported as such, not as a win."""
    by = {(r["variant"], r["budget"]): r for r in res["rows"] if r.get("reachable")}
    budgets = sorted({r["budget"] for r in res["rows"]}, key=lambda b: -Fraction(b))
    out = []
    full = by.get(("full", "1"))
    ceiling = res.get("ceiling_auc")
    if full and ceiling:
        gaps = [(a - 0.5) / (ceiling - 0.5) for a in full.get("seed_test_auc") or [full["test_auc"]]]
        gap = (full["test_auc"] - 0.5) / (ceiling - 0.5)
        spread = f", {min(gaps):.1%} to {max(gaps):.1%} over the seeds" if len(gaps) > 1 else ""
        out.append(f"- Full tables close **{gap:.1%}** of the gap between AUC 0.5 and the ceiling "
                   f"({full['test_auc']:.4f} vs {ceiling:.4f}{spread}); target 90%: "
                   f"**{'met' if gap >= 0.9 else 'not met'}**.")
    md = [by[("mixed", b)] for b in budgets if ("mixed", b) in by and b != "1"]
    if full and md:
        best = max(md, key=lambda r: r["test_auc"])
        d = _paired(best, full)
        mean = sum(d) / len(d)
        out.append(f"- Mixed dimension matches full tables at a fraction of the parameters: at "
                   f"{best['bytes_ratio']:.2f}x the bytes its test AUC is {_diff(d)} vs full "
                   f"-> **{'holds' if mean >= -0.002 else 'does not hold'}** (within 0.002 on the mean).")
    both = [(b, by[("mixed_field", b)], by[("mixed", b)]) for b in budgets
            if ("mixed", b) in by and ("mixed_field", b) in by and b != "1"]
    if both:
        out.append("- Field-level mixed dimension (one table per field) against 4 frequency blocks per field, "
                   "test AUC at each budget: " + ", ".join(
                       f"{b}: {_diff(_paired(f, m))} ({f['bytes'] / m['bytes']:.2f}x the bytes)"
                       for b, f, m in both) + ".")
    for v, claim, strict in (("unified", "Unified is on the Pareto front against the hashing trick (AUC >= at equal "
                                            "parameters)", False),
                             ("qr", "QR beats the hashing trick at equal parameters", True)):
        pairs = [(b, by[(v, b)], by[("hashed", b)]) for b in budgets if (v, b) in by and ("hashed", b) in by and b != "1"]
        if not pairs:
            continue
        # "equal parameters" only where the two hold within 15% of each other's bytes
        fair = [(b, _paired(x, h)) for b, x, h in pairs if abs(x["bytes"] / h["bytes"] - 1) <= 0.15]
        unfair = [f"{b} ({x['bytes'] / h['bytes']:.1f}x the bytes, {_diff(_paired(x, h))})"
                  for b, x, h in pairs if abs(x["bytes"] / h["bytes"] - 1) > 0.15]

        def wins(d: float) -> bool:
            return d > 0 if strict else d >= 0

        held = sum(1 for _, d in fair if wins(sum(d) / len(d)))
        every = sum(1 for _, d in fair if all(wins(x) for x in d))
        verdict = "holds" if fair and held == len(fair) else f"holds at {held} of {len(fair)} budgets"
        seeds = len(fair[0][1]) if fair else 1
        if seeds > 1:
            verdict += f" on the mean of {seeds} seeds; at every seed at {every} of {len(fair)}"
        out.append(f"- {claim}: " + ", ".join(f"{b}: {_diff(d)}" for b, d in fair) + f" -> **{verdict}**"
                   + (f"; not comparable at {', '.join(unfair)}" if unfair else "") + ".")
    return out


def _n_seeds(res: Dict[str, Any]) -> int:
    return max((len(r.get("seeds") or [0]) for r in res["rows"] if r.get("reachable", True)), default=1)


def _first_seed(res: Dict[str, Any]) -> int:
    return int(next((r["seeds"][0] for r in res["rows"] if r.get("seeds")), res.get("base", {}).get("seed", 0)))


def _seeds_text(res: Dict[str, Any]) -> str:
    seeds = next((r.get("seeds") for r in res["rows"] if r.get("seeds")), None) or [res.get("base", {}).get("seed", 0)]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]} (mean and range over them)"


def _delta(d: float) -> str:
    """A signed AUC delta to 4 decimals; one that rounds to zero reads +0.0000."""
    return f"{round(d, 4) + 0.0:+.4f}"


def _storage_cells(r: Dict[str, Any], dtypes: Sequence[str]) -> str:
    st = r.get("storage") or {}
    cells = ""
    for d in dtypes:
        if d in st:
            cells += f" {format_mb(st[d]['bytes'])} | {_delta(st[d]['test_auc'] - st['fp32']['test_auc'])} |"
        else:
            cells += " | |"
    return cells


def _storage_verdicts(res: Dict[str, Any], dtypes: Sequence[str]) -> List[str]:
    """How much each storage moves test AUC, and full tables in int8 against the best fp32 row at 1/4."""
    rows = [r for r in res["rows"] if r.get("reachable") and r.get("storage")]
    out = []
    for d in dtypes:
        deltas = [r["storage"][d]["test_auc"] - r["storage"]["fp32"]["test_auc"] for r in rows if d in r["storage"]]
        if deltas:
            out.append(f"- {d} tables move test AUC by {_delta(min(deltas))} to {_delta(max(deltas))} across "
                       f"{len(deltas)} rows.")
    full = next((r for r in rows if r["variant"] == "full" and r["budget"] == "1" and "int8" in r["storage"]), None)
    quarter = [r for r in res["rows"] if r.get("reachable") and r["budget"] == "1/4"]
    if full is not None and quarter:
        best = max(quarter, key=lambda r: r["test_auc"])
        i8 = full["storage"]["int8"]
        best_auc = (best.get("seed_test_auc") or [best["test_auc"]])[0]  # the scored model's seed
        d = i8["test_auc"] - best_auc
        out.append("- All rows in int8 against 1/4 of the bytes in fp32: full tables in int8 hold "
                   f"{format_mb(i8['bytes'])} "
                   f"at test AUC {i8['test_auc']:.4f}; the best fp32 row at 1/4, {best['variant']}, holds "
                   f"{format_mb(best['bytes'])} at {best_auc:.4f} -> int8 full tables are "
                   f"**{'ahead' if d > 0 else 'behind'}** by {abs(d):.4f}.")
    return out


def _movielens_lines(ml: Dict[str, Any]) -> List[str]:
    """The MovieLens table: full tables, the hashing trick and unified at its parameters, over seeds."""
    lines = [f"Real MovieLens latest-small (rating >= 4 = click), `{ml['config']}`: full tables, "
             f"the hashing trick keeping 1/{ml['compression']:g} of the rows of fields with >= {ml['min_rows']} ids, "
             "and one unified table with the hashing trick's parameter count.", "",
             f"{_seeds_text(ml).capitalize()}.", "",
             "| variant | test AUC | test log loss | params | bytes |", "|---|---:|---:|---:|---:|"]
    for r in ml["rows"]:
        lines.append(f"| {r['variant']} | {_cell(r, 'test_auc')} | {_cell(r, 'test_logloss')} | {r['params']:,} | "
                     f"{format_mb(r['bytes'])} |")
    by = {r["variant"]: r for r in ml["rows"]}
    if "unified" in by and "hashed" in by:
        d = _paired(by["unified"], by["hashed"])
        lines += ["", f"- Unified minus the hashing trick at equal parameters, test AUC: {_diff(d)}."]
    return lines


def movielens_report(ml: Dict[str, Any], command: str) -> str:
    """The MovieLens table alone (``--section movielens``), ``command`` under it."""
    secs = sum(r.get("seconds", 0) for r in ml["rows"])
    return "\n".join([*_movielens_lines(ml), "", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of "
                      "training.", "", f"Command: `{command}`"])


def report(res: Dict[str, Any], ml: Optional[Dict[str, Any]], command: str, plot_name: str) -> str:
    """The main section as Markdown: every variant at every budget with the ceiling, the plot (``plot_name``,
    beside the README), the papers' claims checked on the rows, the searched configs, MovieLens (``ml``,
    None: left out) and ``command`` under it."""
    b = res["base"]
    dtypes = [d for d in STORAGE_DTYPES if any(d in (r.get("storage") or {}) for r in res["rows"])]
    gen = res["data"]["generate"] or {}
    rows_meta = res["data"]["rows"] or {}
    lines = [
        f"DLRM (bottom {b['model']['bottom_mlp']}, top {b['model']['top_mlp']}, {b['model']['interaction']}), "
        f"dim {b['embeddings']['dim']}, on generated Criteo-like data ({gen.get('rows', '?'):,} rows, cardinality scale "
        f"{gen.get('scale', '?')}; train/valid/test {rows_meta.get('train', '?'):,}/{rows_meta.get('valid', '?'):,}/"
        f"{rows_meta.get('test', '?'):,}). Every run: {b['train']['epochs']} epoch(s)"
        + (f", at most {b['train']['max_steps']} steps" if b['train'].get('max_steps') else "")
        + f", batch {b['data']['batch_size']}, {_seeds_text(res)}, {b['optim']['embedding']} {b['optim']['embedding_lr']} "
        f"+ {b['optim']['dense']} {b['optim']['dense_lr']}. Budget = fraction of the full tables' "
        f"{format_mb(res['full_bytes'])}; `bytes` is what each run actually holds (small fields stay whole, so "
        "compressed variants sit a little above their budget).", "",
        ("| variant | budget | test AUC | test log loss | params | bytes | x full |" if _n_seeds(res) == 1 else
         "| variant | budget | test AUC, mean [range] | test log loss, mean [range] | params | bytes | x full |")
        + "".join(f" {d} bytes | {d} Δ AUC |" for d in dtypes),
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(dtypes),
    ]
    blank = " |" * (2 * len(dtypes))
    if res.get("ceiling_auc"):
        lines.append(f"| ceiling (true probabilities) | | {res['ceiling_auc']:.4f} | {res['ceiling_logloss']:.4f} | | | |"
                     + blank)
    for r in sorted(res["rows"], key=lambda r: (VARIANT_ORDER.index(r["variant"]), -Fraction(r["budget"]))):
        if not r.get("reachable"):
            lines.append(f"| {r['variant']} | {r['budget']} | out of reach | | | | |" + blank)
            continue
        lines.append(f"| {r['variant']} | {r['budget']} | {_cell(r, 'test_auc')} | {_cell(r, 'test_logloss')} | "
                     f"{r['params']:,} | {format_mb(r['bytes'])} | {r['bytes_ratio']:.3f} |" + _storage_cells(r, dtypes))
    if dtypes:
        lines += ["", "Storage columns: the same trained model scored on the test split with its tables stored in "
                  + " and ".join(dtypes) + " (int8: row-wise, a byte per element and an fp32 scale and bias per row, "
                  "dequantised on lookup; no retraining) through `recsys_emb.inference`; Δ AUC against the same "
                  "scoring with fp32 tables; bytes as stored (dense parameters in fp32)"
                  + (f"; the model of seed {_first_seed(res)}." if _n_seeds(res) > 1 else ".")]
    lines += ["", f"![test AUC against bytes]({plot_name})", "", "Claims checked on these rows:", "", *_verdicts(res),
              *_storage_verdicts(res, dtypes)]
    searched = [r for r in res["rows"] if r["variant"] == "searched" and r.get("reachable")]
    if searched:
        lines += ["", "Searched configs (per vocabulary-size group: dim, and variant/rows where not full):", ""]
        for r in searched:
            e = r["embeddings"]
            parts = {f: f"d{d}" for f, d in (e.get("dims") or {}).items()}
            for f, o in (e.get("overrides") or {}).items():
                parts[f] = f"{o.get('type')} d{o.get('dim')}" + (f" {o['buckets']} rows" if "buckets" in o else "")
            lines.append(f"- {r['budget']}: " + ", ".join(f"{f} {parts[f]}" for f in sorted(parts, key=lambda f: (len(f), f))))
    if ml:
        lines += ["", *_movielens_lines(ml)]
    secs = sum(r.get("seconds", 0) for r in res["rows"]) + sum(r.get("seconds", 0) for r in (ml or {}).get("rows", []))
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of training.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def _reference_lines(res: Dict[str, Any], extra: int) -> List[str]:
    """The constant and logistic-regression rows (``res["baselines"]``) and the ceiling as table rows: name,
    three empty cells, test AUC, test log loss, then ``extra`` empty cells."""
    names = {"constant": "constant (training positive rate)", "logistic_regression": "logistic regression (one-hot)"}
    tail = " |" * extra
    lines = [f"| {names.get(k, k)} | | | | {b['auc']:.4f} | {b['logloss']:.4f} |{tail}" for k, b in res["baselines"].items()]
    if res.get("ceiling_auc"):
        lines.append(f"| ceiling (true probabilities) | | | | {res['ceiling_auc']:.4f} | |{tail}")
    return lines


def avazu_report(res: Dict[str, Any], command: str) -> str:
    """The avazu section (:func:`~recsys_emb.benchmarks.quality.sections.run_avazu`) as Markdown: each
    variant's bytes and test AUC / log loss per budget (mean and range over the seeds), the constant and
    logistic-regression rows, the ceiling, ``command`` under it."""
    rows_n = res["data"]["rows"] or {}
    overrides = "".join(f" `--set {o}`" for o in res["overrides"])
    lines = [f"Avazu-shaped synthetic data (`recsys-emb generate avazu-like --rows {rows_n.get('total', 0):,}`, "
             "planted click probabilities), preprocessed under the example schema `configs/schemas/avazu.yaml` "
             "with `device_id` and `device_ip` counted (min_count 2) rather than hashed, so the full row keeps "
             f"every value seen twice; split by `hour` (train {rows_n.get('train', 0):,}, valid "
             f"{rows_n.get('valid', 0):,}, test {rows_n.get('test', 0):,} rows). DLRM `{res['config']}`{overrides} "
             "at its defaults, every field from the data's metadata; each variant the largest configuration within "
             f"each budget, as in the main table. {_seeds_text(res).capitalize()}.", "",
             "| variant | budget | embedding bytes | x full | test AUC | test log loss |", "|---|---:|---:|---:|---:|---:|"]
    for b in dict.fromkeys(r["budget"] for r in res["rows"]):
        for v in AVAZU_VARIANTS:
            r = next((x for x in res["rows"] if x["variant"] == v and x["budget"] == b), None)
            if r is None:
                continue
            if not r.get("reachable"):
                lines.append(f"| {v} | {b} | out of reach | | | |")
                continue
            lines.append(f"| {v} | {b} | {format_mb(r['bytes'])} | {r['bytes_ratio']:.3f} | {_cell(r, 'test_auc')} | "
                         f"{_cell(r, 'test_logloss')} |")
    lines += _reference_lines(res, 0)
    full = next((r for r in res["rows"] if r["variant"] == "full" and r["budget"] == "1" and r.get("reachable")), None)
    lr = res["baselines"].get("logistic_regression")
    if full is not None and lr is not None:
        d = full["test_auc"] - lr["auc"]
        aucs = full.get("seed_test_auc") or [full["test_auc"]]
        lines += ["", f"- DLRM with full tables minus the logistic regression, test AUC: {d:+.4f} "
                  f"({'ahead' if d > 0 else 'behind'} on the mean; ahead at {sum(a > lr['auc'] for a in aucs)} of "
                  f"{len(aucs)} seeds)."]
    secs = sum(r.get("seconds", 0) for r in res["rows"] if r.get("reachable"))
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of training.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def dcn_report(res: Dict[str, Any], command: str) -> str:
    """The dcn section (:func:`~recsys_emb.benchmarks.quality.sections.run_dcn`) as Markdown: per variant and
    budget, the dot DLRM's and DLRM-DCNv2's test AUC and log loss over the seeds, their paired difference, the
    dense parameters and train speed of each; how often DCNv2 is ahead; ``command`` under it."""
    b = res["base"]
    rank = res["cross_rank"]
    rows = [r for r in res["rows"] if r.get("reachable")]
    seeds = _seeds_text({"rows": [r["dot"] for r in rows], "base": b})
    lines = [f"DLRM-DCNv2 (`model.interaction: dcn`): the DLRM of the table above with its dot interaction replaced "
             f"by {res['cross_layers']} DCN-v2 cross layers ({f'rank {rank}' if rank else 'full rank'}) over "
             "`x_0 = [bottom output, e_1..e_F]`, the top MLP reading `x_L`. Both models: the same data, embeddings, "
             f"training (bottom {b['model']['bottom_mlp']}, top {b['model']['top_mlp']}, batch "
             f"{b['data']['batch_size']}, {b['train']['epochs']} epoch(s)) and {seeds}. "
             "Δ: DCNv2 minus dot, seed by seed (mean [range]).", "",
             "| variant | budget | bytes | x full | dot test AUC | DCNv2 test AUC | Δ test AUC | dot log loss | "
             "DCNv2 log loss | Δ log loss | dense params dot / DCNv2 | train samples/s dot / DCNv2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(res["rows"], key=lambda r: (VARIANT_ORDER.index(r["variant"]), -Fraction(r["budget"]))):
        if not r.get("reachable"):
            lines.append(f"| {r['variant']} | {r['budget']} | out of reach | | | | | | | | | |")
            continue
        dot, dcn = r["dot"], r["dcn"]
        dll = [a - c for a, c in zip(dcn.get("seed_test_logloss") or [dcn["test_logloss"]],
                                     dot.get("seed_test_logloss") or [dot["test_logloss"]])]
        lines.append(f"| {r['variant']} | {r['budget']} | {format_mb(dcn['bytes'])} | {r['bytes_ratio']:.3f} | "
                     f"{_cell(dot, 'test_auc')} | {_cell(dcn, 'test_auc')} | {_diff(_paired(dcn, dot))} | "
                     f"{_cell(dot, 'test_logloss')} | {_cell(dcn, 'test_logloss')} | {_diff(dll)} | "
                     f"{dot.get('dense_params') or 0:,} / {dcn.get('dense_params') or 0:,} | "
                     f"{dot.get('samples_per_s') or 0:,.0f} / {dcn.get('samples_per_s') or 0:,.0f} |")
    if rows:
        diffs = [_paired(r["dcn"], r["dot"]) for r in rows]
        ahead = sum(1 for d in diffs if sum(d) / len(d) > 0)
        every = sum(1 for d in diffs if all(x > 0 for x in d))
        behind = sum(1 for d in diffs if all(x < 0 for x in d))
        flat = [x for d in diffs for x in d]
        lines += ["", f"- DCNv2 minus dot, test AUC over all {len(flat)} paired runs: mean {_delta(sum(flat) / len(flat))}, "
                  f"{_delta(min(flat))} to {_delta(max(flat))}. DCNv2 is ahead on the mean at **{ahead} of "
                  f"{len(rows)}** rows, at every seed at {every} of {len(rows)}; behind at every seed at {behind} of "
                  f"{len(rows)}."]
    secs = sum(r[k].get("seconds", 0) for r in rows for k in ("dot", "dcn"))
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of training.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def _family_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    order = {v: i for i, v in enumerate(FAMILY_ROWS)}
    return sorted(res["rows"], key=lambda r: (-Fraction(r["budget"]), order.get(r["variant"], len(order))))


def _winners(res: Dict[str, Any]) -> List[str]:
    """Per budget: the family with the best mean test AUC, its margin over the runner-up seed by seed, and
    whether that margin holds at every seed or lies inside the seeds' spread."""
    out = []
    for b in dict.fromkeys(r["budget"] for r in _family_rows(res)):
        at = sorted((r for r in res["rows"] if r["budget"] == b and r.get("reachable") and r["variant"] != "full"),
                    key=lambda r: -r["test_auc"])
        if not at:
            continue
        top = at[0]
        if len(at) == 1:
            out.append(f"- {b}: only {top['variant']} reaches it ({top['test_auc']:.4f}).")
            continue
        d = _paired(top, at[1])
        if max(abs(x) for x in d) < 5e-5:  # equal to the table's 4 decimals at every seed
            margin = f"level with {at[1]['variant']} ({_diff(d)} at every seed)"
        else:
            margin = f"ahead of {at[1]['variant']} by {_diff(d)} " + (
                "(at every seed)" if all(x > 0 for x in d) else "(**not** at every seed: inside the seeds' spread)")
        out.append(f"- {b}: **{top['variant']}** {top['test_auc']:.4f}, {margin}"
                   + ("; then " + ", ".join(f"{r['variant']} {r['test_auc'] - top['test_auc']:+.4f}" for r in at[2:])
                      if len(at) > 2 else "") + ".")
    return out


def _vldb_verdict(res: Dict[str, Any]) -> List[str]:
    """The VLDB 2024 benchmark's finding (hash-based methods strongest at high compression) on these rows:
    at every budget reached by a hash-based and a factorised family, the best of each, paired seed by seed;
    the verdict at the smallest such budget."""
    reached = [r for r in res["rows"] if r.get("reachable")]
    pairs = []
    for b in dict.fromkeys(r["budget"] for r in _family_rows(res)):
        hashed = [r for r in reached if r["budget"] == b and r["variant"] in HASH_BASED]
        factorised = [r for r in reached if r["budget"] == b and r["variant"] in FACTORISED]
        if hashed and factorised:
            hb, fa = (max(rs, key=lambda r: r["test_auc"]) for rs in (hashed, factorised))
            pairs.append((b, hb, fa, _paired(hb, fa)))
    if not pairs:
        return []
    low, _, _, d = pairs[-1]
    gap = sum(d) / len(d)
    finding = "the VLDB 2024 storage-compression benchmark (hash-based methods strongest at high compression)"
    verdict = (f"**ahead**, as in {finding}" if gap > 0 else f"**behind**, unlike {finding}" if gap < 0
               else f"**level** with it, where {finding} puts it ahead")
    return [f"- Hash-based ({', '.join(HASH_BASED)}) against factorised ({', '.join(FACTORISED)}) families, test "
            "AUC: " + "; ".join(f"{b}: best hash-based {hb['variant']} minus best factorised {fa['variant']} {_diff(d)}"
                                for b, hb, fa, d in pairs)
            + f". At the highest compression both reach ({low}) the best hash-based family is {verdict}. TorchRec's "
            "managed collisions (`mch`, a frequency-managed remap, not in that benchmark) are in neither group."]


def families_plot(res: Dict[str, Any], path: Path) -> None:
    """Test AUC against embedding bytes (log scale), one line per family of the families section, the
    logistic regression and the ceiling as horizontal lines, as a PNG at ``path``."""
    lr = res["baselines"].get("logistic_regression")
    _auc_bytes_plot(res, path, FAMILY_ROWS, "DLRM on Criteo-like data: every compression family", squares=FACTORISED,
                    reference=lr["auc"] if lr else None)


def families_report(res: Dict[str, Any], command: str, plot_name: str = "quality_families.png") -> str:
    """The families section (:func:`~recsys_emb.benchmarks.quality.sections.run_families`) as Markdown: each
    family's bytes, test AUC and log loss (mean [range] over the seeds) and train speed per budget, the
    reference rows, the plot (``plot_name``, beside the README), the winner at each budget with its margin,
    the VLDB benchmark's finding checked, ``command`` under it."""
    b = res["base"]
    lines = [f"Every compression family on the data, model and training of the main table; {_seeds_text(res)}. "
             "Each family's largest configuration within each budget of "
             f"{format_mb(res['full_bytes'])} (`embeddings.compression` = 1/budget, its options at their "
             f"defaults; fields under {b['embeddings']['min_rows']} ids stay whole). A family reaches a budget when "
             f"its bytes are at most {res['reach_slack']:g}x the budget. `robe`: one hashed array per group "
             "(ROBE-Z blocks); `mch`: TorchRec's `MCHManagedCollisionModule` (LFU eviction) in front of a table of "
             "`1/budget` of the rows; `lowrank`: a `rows x rank` table times a learned `rank x dim` projection; "
             "`tt`: TT-Rec's three cores per row.", "",
             "| family | budget | bytes | x full | test AUC, mean [range] | test log loss, mean [range] | "
             "train samples/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in _family_rows(res):
        if not r.get("reachable"):
            lines.append(f"| {r['variant']} | {r['budget']} | {format_mb(r['bytes'])} | out of reach "
                         f"({r['over_budget']:.1f}x the budget) | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['budget']} | {format_mb(r['bytes'])} | {r['bytes_ratio']:.3f} | "
                     f"{_cell(r, 'test_auc')} | {_cell(r, 'test_logloss')} | {r.get('samples_per_s') or 0:,.0f} |")
    lines += _reference_lines(res, 1)
    lines += ["", f"![test AUC against bytes, every family]({plot_name})", "", "Which family wins at each budget "
              "(best mean test AUC; margin over the runner-up seed by seed, mean [range]):", "", *_winners(res),
              *_vldb_verdict(res)]
    unreached = [r for r in res["rows"] if not r.get("reachable")]
    if unreached:
        none = [x for x in dict.fromkeys(r["budget"] for r in _family_rows(res))
                if not any(r.get("reachable") for r in res["rows"] if r["budget"] == x)]
        lines.append(f"- Out of reach: {len(unreached)} of the {len(res['rows'])} family-budget pairs (their bytes "
                     "against the budget are in the table)" + (f"; no family reaches {', '.join(none)}" if none else "")
                     + f". The fields under {b['embeddings']['min_rows']} ids stay whole, and at the smallest budgets "
                     f"they alone hold more than the budget; `lowrank`'s rank has a floor of 4 (of dim "
                     f"{b['embeddings']['dim']}).")
    secs = sum(r.get("seconds", 0) for r in res["rows"] if r.get("reachable"))
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of training (reused runs count "
              "their own).", "", f"Command: `{command}`"]
    return "\n".join(lines)
