"""From a trained run to scores of new raw rows: train a tiny mixed-dimension DLRM, export it with the CLI,
delete the dataset, and score raw Criteo TSV lines (with and without the label column, gzip, unseen
values, a malformed line) with ``recsys-emb predict`` from another working directory. Real processes,
real files; the scores equal the eager model's on the processed rows, and the metrics ``evaluate``'s."""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_emb.config import config_from_dict
from recsys_emb.data.batches import ParquetBatches, batch_from_table
from recsys_emb.data.criteo import CAT_COLUMNS, INT_COLUMNS, preprocess
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import InvalidInputError
from recsys_emb.scoring import score_batch, score_frame
from recsys_emb.serving import evaluate_checkpoint
from recsys_emb.training import train
from recsys_emb.training.metrics import ctr_metrics
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
UNSEEN = "fedcba987654321"  # 15 hex digits: a valid raw value no generated row has


def cli(*args, cwd):
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=HANG_GUARD_S, env=env)
    assert proc.returncode == 0, f"recsys-emb {' '.join(map(str, args))}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run on tiny data (mixed dimension: its blocks come from the data's counts), with the eager model's
    logits and ids of the test split and ``evaluate``'s metrics, taken while the data still exists."""
    from recsys_emb.model_dir import load_model

    base = tmp_path_factory.mktemp("predict")
    g = generate_criteo_like(base / "raw", rows=3000, scale=0.001, seed=1)
    meta = preprocess(g.tsv, base / "data")  # min_count: auto, 2 on 2,400 training rows
    assert meta["min_count"] == 2
    cfg = config_from_dict({
        "name": "tiny", "seed": 0,
        "data": {"path": str(base / "data"), "batch_size": 256, "eval_batch_size": 4096},
        "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16]},
        "embeddings": {"variant": "mixed", "dim": 8, "min_rows": 16, "compression": 4},
        "train": {"epochs": 1, "log_every": 0, "progress": False, "out_dir": str(base / "run")},
    })
    summary = train(cfg)
    assert summary["embedding_l2"] == pytest.approx((400 / 2400) ** 2)  # embedding_l2: auto on 2,400 rows
    model = load_model(base / "run")
    assert model.path == base / "run" / "model"  # written by training, not rebuilt from the checkpoint
    ref = np.concatenate([score_batch(model, b) for b in ParquetBatches(base / "data", "test", batch_size=97)])
    test = pq.read_table(sorted((base / "data" / "test").glob("*.parquet")))
    all_lines = g.tsv.read_text().splitlines()
    lines = all_lines[-len(ref):]
    return {"base": base, "ref": ref, "test": test, "lines": lines, "model": model,
            "evaluate": evaluate_checkpoint(base / "run", "test"),
            "train_lines": all_lines[:meta["rows"]["train"]],
            "train": pq.read_table(sorted((base / "data" / "train").glob("*.parquet")))}


def test_ids_seen_once_in_training_read_the_oov_row_in_training_export_and_predict(trained):
    """``min_count: auto`` on small data: a value seen once in the training rows has no id of its own. Its
    training row holds the field's OOV id (so the OOV row is what trains on it), and the exported model
    scores a raw line holding it exactly as one holding a value never seen."""
    base, model, train_lines = trained["base"], trained["model"], trained["train_lines"]
    fields = [ln.split("\t") for ln in train_lines]
    col = None
    for j, c in enumerate(CAT_COLUMNS):
        values = pd.Series([f[14 + j] for f in fields])
        counts = values[values != ""].value_counts()
        once, often = counts[counts == 1], counts[counts >= 20]
        if len(once) and len(often):
            col, j_col, rare, frequent = c, j, once.index[0], often.index[0]
            break
    assert col is not None
    row = next(i for i, f in enumerate(fields) if f[14 + j_col] == rare)
    oov = model.dataset["oov_ids"][col]
    assert trained["train"].column(col)[row].as_py() == oov  # training read the OOV row for it
    assert trained["train"].column(col).to_numpy()[[i for i, f in enumerate(fields) if f[14 + j_col] == frequent]
                                                  ].max() < oov

    cli("export", "--checkpoint", base / "run", "--out", base / "models" / "rare", cwd=base)
    probe = trained["lines"][0].split("\t")
    variants = {}
    for name, value in (("rare", rare), ("unseen", UNSEEN), ("frequent", frequent)):
        probe[14 + j_col] = value
        variants[name] = "\t".join(probe)
    (base / "rare.tsv").write_text("\n".join(variants.values()) + "\n")
    out = cli("predict", "--model", base / "models" / "rare", "--input", base / "rare.tsv", "--out",
              base / "rare.parquet", "--json", cwd=base)
    logits = pq.read_table(base / "rare.parquet").column("logit").to_numpy()
    assert logits[0] == logits[1]  # the value seen once scores as an unseen one: the OOV row
    assert logits[2] != logits[0]  # the field does move the score
    assert json.loads(out.stdout)["oov"][col] == 2


def test_predict_scores_raw_rows_of_a_model_whose_data_is_gone(trained):
    base, ref, lines, model = trained["base"], trained["ref"], trained["lines"], trained["model"]
    n = len(lines)
    day = base / "new" / "day.tsv"
    day.parent.mkdir()
    bad_at = n // 2  # a malformed line between two good ones: line bad_at + 1 of the file
    day.write_text("\n".join(lines[:bad_at] + ["1\t2\tthree"] + lines[bad_at:]) + "\n")
    # the test day without its label column, gzipped, with values the vocabulary never saw in C3 of five rows
    unlabelled = [ln.split("\t", 1)[1].split("\t") for ln in lines]
    c3 = 13 + CAT_COLUMNS.index("C3")
    for row in unlabelled[:5]:
        row[c3] = UNSEEN
    with gzip.open(base / "new" / "day39.tsv.gz", "wt") as fh:
        fh.write("".join("\t".join(r) + "\n" for r in unlabelled))

    cli("export", "--checkpoint", base / "run", "--out", base / "models" / "tiny", cwd=base)
    shutil.rmtree(base / "data")
    shutil.rmtree(base / "raw")
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    out = cli("predict", "--model", "../models/tiny", "--input", "../new/day.tsv", "../new/day39.tsv.gz",
              "--out", "scores.parquet", "--on-bad-line", "skip", "--json", cwd=elsewhere)
    report = json.loads(out.stdout)
    scores = pq.read_table(elsewhere / "scores.parquet").to_pandas()

    assert report["rows"] == 2 * n and report["labelled"] == n
    assert report["bad_lines"]["bad_lines"] == 1
    assert report["bad_lines"]["examples"][0]["line"] == bad_at + 1
    assert report["bad_lines"]["examples"][0]["path"].endswith("day.tsv")

    labelled = scores[scores.file.astype(str).str.endswith("day.tsv")]
    assert labelled.line.tolist() == list(range(1, bad_at + 1)) + list(range(bad_at + 2, n + 2))
    np.testing.assert_allclose(labelled.logit.values, ref, rtol=0, atol=1e-6)
    m = ctr_metrics(labelled.label.values.astype(int), labelled.logit.values)
    assert abs(m["auc"] - trained["evaluate"]["auc"]) < 1e-6
    assert abs(m["logloss"] - trained["evaluate"]["logloss"]) < 1e-6

    # the eager model on the processed rows, C3 set to its OOV id where the raw value was unseen
    ids = {c: trained["test"].column(c).to_numpy().copy() for c in CAT_COLUMNS}
    oov_c3 = model.dataset["oov_ids"]["C3"]
    ids["C3"][:5] = oov_c3
    processed = pa.table({**{c: trained["test"].column(c) for c in INT_COLUMNS}, **ids})
    expected = score_batch(model, batch_from_table(processed, model.schema))
    unl = scores[scores.file.astype(str).str.endswith("day39.tsv.gz")]
    assert unl.label.isna().all() and unl.line.tolist() == list(range(1, n + 1))
    np.testing.assert_allclose(unl.logit.values, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(unl.score.values, 1 / (1 + np.exp(-expected)), rtol=0, atol=1e-6)
    assert not np.allclose(expected[:5], ref[:5])  # the unseen values do change those scores

    # OOV: rows whose raw value maps to the OOV id, in both files; the five unseen C3 values among them
    oov_ids = model.dataset["oov_ids"]
    per_file = {c: int((trained["test"].column(c).to_numpy() == oov_ids[c]).sum()) for c in CAT_COLUMNS}
    assert report["oov"]["C3"] == per_file["C3"] + int((ids["C3"] == oov_c3).sum())
    assert int((ids["C3"] == oov_c3).sum()) >= 5
    assert all(report["oov"][c] == 2 * per_file[c] for c in CAT_COLUMNS if c != "C3")


def test_score_frame_takes_raw_values_or_ids(trained):
    model, lines, ref = trained["model"], trained["lines"], trained["ref"]
    cols = ["label", *INT_COLUMNS, *CAT_COLUMNS]
    rows = [ln.split("\t") for ln in lines[:50]]
    df = pd.DataFrame(rows, columns=cols).drop(columns="label")
    for c in INT_COLUMNS:
        df[c] = pd.to_numeric(df[c].replace("", None))
    oov = {}
    p = score_frame(model, df, oov=oov)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-ref[:50])), rtol=0, atol=1e-6)
    assert set(oov) == set(CAT_COLUMNS)
    p_ids = score_frame(model, trained["test"].slice(0, 50), raw=False)
    np.testing.assert_allclose(p_ids, p, rtol=0, atol=1e-6)
    df.loc[3, "C7"] = "not-hex"
    with pytest.raises(InvalidInputError, match=r"column C7, row 3: 'not-hex'"):
        score_frame(model, df)
    with pytest.raises(InvalidInputError, match=r"missing \['C26'\]"):
        score_frame(model, df.drop(columns="C26"))


def test_predict_reads_processed_parquet_with_an_id_column(trained, tmp_path):
    from recsys_emb.errors import DataError
    from recsys_emb.scoring import predict

    model, ref = trained["model"], trained["ref"]
    table = trained["test"].append_column("request", pa.array([f"r{i}" for i in range(trained["test"].num_rows)]))
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=100)
    r = predict(model, tmp_path / "a.parquet", tmp_path / "s.parquet", id_column="request", batch_rows=64)
    got = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert r.rows == len(ref) and r.bad_lines["bad_lines"] == 0 and r.labelled == len(ref)
    assert got.request.tolist() == [f"r{i}" for i in range(len(ref))]
    np.testing.assert_allclose(got.logit.values, ref, rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="s.parquet exists; pass overwrite=True"):
        predict(model, tmp_path / "a.parquet", tmp_path / "s.parquet")
    with pytest.raises(DataError, match="--id-column 'nope' is not a column"):
        predict(model, tmp_path / "a.parquet", tmp_path / "t.parquet", id_column="nope")
    (tmp_path / "d.tsv").write_text(trained["lines"][0] + "\n")
    with pytest.raises(DataError, match="a Criteo TSV has no named columns"):
        predict(model, tmp_path / "d.tsv", tmp_path / "t.parquet", id_column="request")
    with pytest.raises(DataError, match="inputs mix Parquet and TSV"):
        predict(model, [tmp_path / "d.tsv", tmp_path / "a.parquet"], tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "d.tsv", "s.parquet"]  # no temporaries


def test_predict_and_export_refuse_an_output_over_their_inputs(trained, tmp_path):
    from recsys_emb.errors import DataError
    from recsys_emb.model_dir import export_model
    from recsys_emb.scoring import predict

    model, run = trained["model"], trained["base"] / "run"
    pq.write_table(trained["test"], tmp_path / "a.parquet")
    before = (tmp_path / "a.parquet").read_bytes()
    # before: the scores replaced the rows they were computed from
    with pytest.raises(DataError, match=r"--out .*a\.parquet is predict's input .*a\.parquet: replacing it would "
                                        r"delete the input"):
        predict(model, tmp_path / "a.parquet", tmp_path / "a.parquet", overwrite=True)
    weights = (model.path / "weights.pt").read_bytes()
    with pytest.raises(DataError, match=r"weights\.pt is predict's input"):
        predict(model, tmp_path / "a.parquet", model.path / "weights.pt", overwrite=True)
    with pytest.raises(DataError, match=r"--out .* contains export's input .*run"):
        export_model(run, trained["base"], overwrite=True)
    assert (tmp_path / "a.parquet").read_bytes() == before and (model.path / "weights.pt").read_bytes() == weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_export_torch_export_from_the_model_directory_alone(trained, tmp_path):
    """``recsys-emb export --format torch-export`` takes the run's model directory (no dataset needed) and
    writes the program; fp32 tables give the eager logits, int8 tables stay within the quantisation error,
    and --table-dtype with the model-dir format is refused in one line."""
    import torch

    from recsys_emb.inference import KJTScorer, load_program

    base, model = trained["base"], trained["model"]
    batch = batch_from_table(pa.table({c: trained["test"].column(c) for c in (*INT_COLUMNS, *CAT_COLUMNS)}),
                             model.schema)
    for dtype in ("fp32", "int8"):
        cli("export", "--checkpoint", base / "run" / "model", "--out", tmp_path / dtype, "--format", "torch-export",
            "--table-dtype", dtype, cwd=tmp_path)
        meta = json.loads((tmp_path / dtype / "export.json").read_text())
        program = load_program(tmp_path / dtype)
        with torch.no_grad():
            got = KJTScorer(program, meta["features"], batch.dense.shape[1])(batch.dense, batch.sparse).numpy()
        np.testing.assert_allclose(got, trained["ref"], rtol=0, atol=1e-6 if dtype == "fp32" else 0.05)
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "export", "--checkpoint", str(base / "run"),
                           "--out", str(tmp_path / "m"), "--table-dtype", "int8"], capture_output=True, text=True,
                          env=env, timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "--table-dtype int8 applies to --format torch-export" in proc.stderr


BAD_PROCESSED = [  # (column, value, reason): what the TSV reader refuses, as it arrives in processed Parquet
    ("I2", float("nan"), "non-finite I2"),
    ("I2", float("inf"), "non-finite I2"),
    ("I2", None, "non-finite I2"),
    ("label", 300, "label not 0/1"),  # before: written as 44 (int8 wrap-around)
    ("C1", 1.5, "non-integer C1"),  # before: scored as id 1
    ("C1", 10 ** 9, "C1 id out of range"),
]


@pytest.mark.parametrize("column,value,reason", BAD_PROCESSED)
def test_parquet_rows_follow_the_tsv_readers_rules(trained, tmp_path, column, value, reason):
    """A bad value in processed Parquet stops ``predict`` naming file, row, column and value, or under
    ``skip`` is counted with its row and the other rows are scored as before (before: NaN scores, a
    wrapped label, a rounded id, all with exit 0)."""
    from recsys_emb.errors import BadLineError
    from recsys_emb.scoring import predict

    model, ref, test = trained["model"], trained["ref"], trained["test"]
    kind = pa.float32() if column == "I2" else pa.float64() if isinstance(value, float) else pa.int64()
    values = test.column(column).to_pylist()
    values[7] = value
    table = test.set_column(test.schema.get_field_index(column), column, pa.array(values, kind))
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=100)
    shown = "null" if value is None else repr(value)
    with pytest.raises(BadLineError, match=rf"rows.parquet: column {column}, row 7: {re.escape(shown)}: {reason}"):
        predict(model, tmp_path / "rows.parquet", tmp_path / "s.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]
    r = predict(model, tmp_path / "rows.parquet", tmp_path / "s.parquet", on_bad_line="skip", max_bad_fraction=0.01)
    got = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert r.bad_lines["bad_lines"] == 1 and r.bad_lines["examples"] == [{"path": str(tmp_path / "rows.parquet"),
                                                                          "row": 7, "reason": reason}]
    keep = np.arange(len(ref)) != 7
    assert got.row.tolist() == np.flatnonzero(keep).tolist() and r.rows == len(ref) - 1
    np.testing.assert_allclose(got.logit.values, ref[keep], rtol=0, atol=1e-6)
    assert got.label.tolist() == test.column("label").to_numpy()[keep].tolist()
    with pytest.raises(InvalidInputError, match=rf"column {column}, row 7: {re.escape(shown)}: {reason}"):
        score_frame(model, table, raw=False)


@pytest.mark.parametrize("value,dtype,reason", [
    (float("inf"), "float64", "non-integer I1"),
    (1e30, "float64", "I1 out of the int64 range"),
    (1.5, "float64", "non-integer I1"),
    (2 ** 64 - 1, "uint64", "I1 out of the int64 range"),
])
def test_score_frame_refuses_counts_the_tsv_reader_refuses(trained, value, dtype, reason):
    # before: each was scored as a count of 0
    df = _raw_frame(trained["lines"][:3])
    df["I1"] = df["I1"].fillna(0).astype(dtype)
    df.loc[2, "I1"] = value
    with pytest.raises(InvalidInputError, match=rf"column I1, row 2: .*: {reason} \("):
        score_frame(trained["model"], df, batch_rows=2)  # the row is numbered in the frame, not in its slice


def test_score_frame_scores_the_largest_count_as_the_tsv_reader_does(trained, tmp_path):
    # before: 2**63 - 1 in an int64 column was scored as a count of 0
    from recsys_emb.scoring import predict

    fields = trained["lines"][0].split("\t")
    fields[1] = str(2 ** 63 - 1)
    (tmp_path / "big.tsv").write_text("\t".join(fields) + "\n")
    predict(trained["model"], tmp_path / "big.tsv", tmp_path / "s.parquet")
    tsv = pq.read_table(tmp_path / "s.parquet").column("score").to_numpy()
    df = _raw_frame(["\t".join(fields)])
    df["I1"] = np.array([2 ** 63 - 1], np.int64)
    fields[1] = "0"
    zero = score_frame(trained["model"], _raw_frame(["\t".join(fields)]))
    np.testing.assert_allclose(score_frame(trained["model"], df), tsv, rtol=0, atol=1e-6)
    assert abs(float(tsv[0]) - float(zero[0])) > 1e-4


def _raw_frame(lines):
    cols = ["label", *INT_COLUMNS, *CAT_COLUMNS]
    df = pd.DataFrame([ln.split("\t") for ln in lines], columns=cols).drop(columns="label")
    for c in INT_COLUMNS:
        df[c] = pd.to_numeric(df[c].replace("", None))
    return df


def test_missing_flags_reach_the_model(tmp_path):
    """With ``missing_flags`` a missing count and a count of 0 score differently (before: the model never
    read M1..M13, so they scored the same); without, the same, as the dense transform maps both to 0."""
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import predict
    from tests.scoring_helpers import criteo_lines, tiny_model_dir

    lines = criteo_lines(tmp_path, 50)
    fields = lines[0].split("\t")
    pair = ["\t".join(fields[:1] + [v] + fields[2:]) for v in ("", "0")]  # I1 missing, I1 = 0
    (tmp_path / "pair.tsv").write_text("\n".join(pair) + "\n")
    for flags in (True, False):
        model = load_model(tiny_model_dir(tmp_path / f"m{flags}", lines, missing_flags=flags))
        assert model.schema.dense[13:] == (tuple(f"M{i}" for i in range(1, 14)) if flags else ())
        predict(model, tmp_path / "pair.tsv", tmp_path / f"s{flags}.parquet")
        tsv = pq.read_table(tmp_path / f"s{flags}.parquet").column("score").to_numpy()
        frame = score_frame(model, _raw_frame(pair))
        np.testing.assert_allclose(frame, tsv, rtol=0, atol=1e-6)
        assert (abs(tsv[0] - tsv[1]) > 1e-4) == flags, tsv


def _predict_and_export_agree(tmp_path, lines, **model_dir):
    """A model directory (``tiny_model_dir(**model_dir)``) over ``lines``: ``recsys-emb predict`` (eager) and
    its ``torch-export`` program, fed the same raw rows, give the same probabilities; returns the model."""
    import dataclasses

    from recsys_emb.inference import KJTScorer, load_program
    from recsys_emb.model_dir import load_model
    from tests.scoring_helpers import tiny_model_dir

    (tmp_path / "rows.tsv").write_text("\n".join(lines) + "\n")
    path = tiny_model_dir(tmp_path / "model", lines, **model_dir)
    model = load_model(path)
    cli("predict", "--model", path, "--input", tmp_path / "rows.tsv", "--out", tmp_path / "scores.parquet",
        cwd=tmp_path)
    cli("export", "--checkpoint", path, "--out", tmp_path / "x", "--format", "torch-export", cwd=tmp_path)
    meta = json.loads((tmp_path / "x" / "export.json").read_text())
    program = KJTScorer(load_program(tmp_path / "x"), meta["features"], len(model.schema.dense))
    exported = score_frame(dataclasses.replace(model, module=program), _raw_frame(lines))
    scores = pq.read_table(tmp_path / "scores.parquet").column("score").to_numpy()
    assert len(scores) == len(lines) and 0.01 < scores.std()  # distinct rows score differently
    np.testing.assert_allclose(scores, exported, rtol=0, atol=1e-6)
    return model


def test_a_dcn_model_directory_is_scored_by_predict_and_its_export_alike(tmp_path):
    """DLRM-DCNv2 (``model.interaction: dcn``, low-rank cross layers) from a model directory: ``recsys-emb
    predict`` (eager) and the ``torch-export`` program, fed the same raw rows, give the same probabilities."""
    from tests.scoring_helpers import criteo_lines

    model = _predict_and_export_agree(tmp_path, criteo_lines(tmp_path, 60),
                                      model={"interaction": "dcn", "cross_layers": 2, "cross_rank": 8})
    assert model.module.interaction == "dcn" and model.module.interact.low_rank


def test_low_rank_tensor_train_robe_and_managed_collisions_are_scored_by_predict_and_their_export_alike(tmp_path):
    """A model directory whose fields are low-rank (the preset), tensor-train, ROBE and TorchRec's managed
    collisions (overrides; the remap admits some ids, the others read its miss row): ``recsys-emb predict``
    (eager) and the ``torch-export`` program give the same probabilities on the same raw rows."""
    from recsys_emb.specs import LowRank, ManagedCollision, Robe, TensorTrain
    from tests.scoring_helpers import criteo_lines

    robe = {"type": "robe", "group": {"name": "robe_array", "size": 256}, "dim": 8, "block": 4}
    mch = {"type": "managed_collision", "dim": 8, "zch_size": 8}
    model = _predict_and_export_agree(tmp_path, criteo_lines(tmp_path, 60), embeddings={
        "variant": "lowrank", "dim": 8, "min_rows": 1, "compression": 2.0,
        "overrides": {"C1": {"type": "tt", "dim": 8, "ranks": [2, 3]}, "C2": robe, "C3": {**robe, "block": 16},
                      "C4": mch, "C5": {**mch, "eviction": "lru"}}})
    kinds = {type(f.embedding) for f in model.features}
    assert {LowRank, TensorTrain, Robe, ManagedCollision} <= kinds, kinds
    remap = model.module.embeddings.variant("C4").mc
    assert int(remap.open_slots()) == 0  # the loaded remap is the saved one: every slot holds an id
