"""A run's output directory is never mixed with another run's: a used directory is refused, two
processes never write one directory, a resume takes only the run's own checkpoints, and a resumed
run logs no step twice (real `recsys-emb train` processes).

A test that needs a run alive waits on the trainer's fault hold (its ``.held`` marker file), never on a
wall-clock guess; the processes' only time limit is the hang guard of tests/waiting.py."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_emb.cli import main
from recsys_emb.config import config_from_dict
from recsys_emb.errors import ConfigError, OutputDirError
from recsys_emb.serving import evaluate_checkpoint
from recsys_emb.training import FAULT_HOLD_ENV, FAULT_KILL_ENV, train
from recsys_emb.training.rundir import RunDirectory
from generated_data import criteo_like_dir
from waiting import HANG_GUARD_S, wait_until

ROOT = Path(__file__).resolve().parents[2]
SETS = ["data.batch_size=256", "model.bottom_mlp=[16, 8]", "model.top_mlp=[16]", "embeddings.variant=hashed",
        "embeddings.dim=8", "embeddings.min_rows=64", "train.log_every=5", "train.progress=false",
        "train.checkpoint_every=20", "train.epochs=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return criteo_like_dir(tmp_path_factory.mktemp("rundir"), rows=20000)


def cfg(data, out, **train):
    return config_from_dict({
        "name": "r", "seed": 0, "data": {"path": str(data), "batch_size": 256, "eval_batch_size": 4096},
        "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16]},
        "embeddings": {"variant": "hashed", "dim": 8, "min_rows": 64},
        "train": {"epochs": 1, "log_every": 5, "progress": False, "out_dir": str(out), **train}})


def argv(data, out, *extra):
    return ["train", "--config", str(ROOT / "configs" / "demo.yaml"),
            *sum((["--set", s] for s in SETS + [f"data.path={data}", f"train.out_dir={out}"]), []), *extra]


def here(data, out, *extra):
    """The same command as :func:`cli`, in this process: for the runs whose process is not what is tested."""
    return main(argv(data, out, *extra))


def cli(data, out, *extra, env=None, wait=True):
    args = [sys.executable, "-m", "recsys_emb.cli", *argv(data, out, *extra)]
    full_env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=full_env, capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_a_new_run_refuses_a_used_directory_and_overwrite_replaces_it(data, tmp_path):
    out = tmp_path / "run"
    first = train(cfg(data, out, max_steps=10))
    with pytest.raises(OutputDirError, match=r"holds an earlier run \(checkpoints, metrics.jsonl, model, run.json, "
                                             r"summary.json\).*--resume.*--overwrite"):
        train(cfg(data, out, max_steps=10))
    again = train(cfg(data, out, max_steps=10), overwrite=True)
    assert again["test"]["auc"] == pytest.approx(first["test"]["auc"], abs=1e-9)
    rows = [(r["step"], r["split"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert len(rows) == len(set(rows)), rows  # the earlier run's rows are gone, not appended to
    (out / "notes.txt").write_text("mine")  # not a run's file: --overwrite must not delete it
    with pytest.raises(OutputDirError, match=r"also holds \['notes.txt'\], which no run wrote"):
        train(cfg(data, out, max_steps=10), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_the_cli_refuses_in_one_line_with_exit_code_2(data, tmp_path):
    out = tmp_path / "run"
    assert here(data, out, "--set", "train.max_steps=4") == 0
    proc = cli(data, out, "--set", "train.max_steps=4")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "holds an earlier run" in proc.stderr and "Traceback" not in proc.stderr


def test_two_processes_never_write_one_directory(data, tmp_path):
    out = tmp_path / "run"
    # the first run is held after step 30 (a checkpoint at 20 written) until the test kills it: it holds
    # the directory however fast this machine trains; it says so by creating never.held
    release = tmp_path / "never"
    first = cli(data, out, "--set", "train.epochs=3", env={FAULT_HOLD_ENV: f"30:{release}"}, wait=False)
    try:
        wait_until(lambda: (tmp_path / "never.held").exists(), "the first run held at step 30", procs=[first])
        assert any((out / "checkpoints").glob("step_00000020*"))
        holder = (out / ".lock").read_text()
        assert f"pid {first.pid}" in holder
        second = cli(data, out, "--resume")
        assert second.returncode == 2 and f"is in use by pid {first.pid}" in second.stderr, second.stderr
        assert first.poll() is None
    finally:
        first.kill()
    first.wait()
    assert first.returncode == -signal.SIGKILL
    # the lock died with its holder: a resume takes over, naming what it took over
    resumed = cli(data, out, "--resume", "--set", "train.epochs=3", "--set", "train.max_steps=40")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"taking over the lock left by pid {first.pid}" in resumed.stderr
    assert (out / ".lock").read_text() == ""  # released at the end


def test_resume_refuses_another_runs_settings_naming_the_keys(data, tmp_path):
    out = tmp_path / "run"
    killed = cli(data, out, env={FAULT_KILL_ENV: "25"})  # after the checkpoint at step 20
    assert killed.returncode == -signal.SIGKILL
    other = cfg(data, out, checkpoint_every=20, log_every=5)
    other.seed = 1
    other.optim.dense_lr = 0.01
    with pytest.raises(ConfigError, match=r"trained by another run: .*optim.dense_lr: 0.001 -> 0.01; seed: 0 -> 1"):
        train(other, resume=True)


def test_a_resumed_run_logs_no_step_twice(data, tmp_path):
    out = tmp_path / "run"
    killed = cli(data, out, env={FAULT_KILL_ENV: "33"})  # logged steps 25 and 30 after the checkpoint at 20
    assert killed.returncode == -signal.SIGKILL
    before = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(before) == 30
    assert here(data, out, "--resume") == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), train_steps  # 25 and 30 once each


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    d = RunDirectory(tmp_path)
    (tmp_path / ".lock").write_text("pid 999999 on host gone since then (recsys-emb train)\n")
    d.open(resume=False, overwrite=False)
    assert f"pid {os.getpid()}" in (tmp_path / ".lock").read_text()
    with pytest.raises(OutputDirError, match=rf"is in use by pid {os.getpid()}"):
        RunDirectory(tmp_path).open(resume=False, overwrite=False)
    d.close()
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict"):
        RunDirectory(tmp_path).open(resume=True, overwrite=True)


def test_the_launchers_logs_neither_make_a_directory_used_nor_are_removed_by_overwrite(tmp_path):
    from recsys_emb.training.rundir import LOGS_DIR, RunDirectory

    log = tmp_path / LOGS_DIR / "20260101-000000-node0" / "rank0" / "stderr.log"
    log.parent.mkdir(parents=True)
    log.write_text("the current launch writes here before rank 0 opens the directory\n")
    d = RunDirectory(tmp_path)
    d.open(resume=False, overwrite=False)  # only logs: a new run is welcome
    (tmp_path / "summary.json").write_text("{}")
    d.close()
    d.open(resume=False, overwrite=True)  # nothing removed yet: the trainer replaces after its checks
    assert (tmp_path / "summary.json").exists()
    d.replace_earlier_run()  # the earlier result goes, the logs stay
    d.close()
    assert not (tmp_path / "summary.json").exists() and log.read_text().startswith("the current launch")


def test_overwrite_refuses_a_nested_file_no_run_wrote(data, tmp_path):
    out = tmp_path / "run"
    train(cfg(data, out, max_steps=10))
    (out / "checkpoints" / "NOTES.md").write_text("mine")
    (out / "model" / "README.md").write_text("mine too")
    # before: only top-level names were checked, and both files were deleted with the earlier run
    with pytest.raises(OutputDirError, match=r"also holds \['checkpoints/NOTES.md', 'model/README.md'\], which no "
                                             r"run wrote"):
        train(cfg(data, out, max_steps=10), overwrite=True)
    assert (out / "checkpoints" / "NOTES.md").read_text() == "mine"
    assert (out / "model" / "README.md").read_text() == "mine too" and (out / "summary.json").exists()
    (out / "checkpoints" / "NOTES.md").unlink()
    (out / "model" / "README.md").unlink()
    train(cfg(data, out, max_steps=10), overwrite=True)  # everything a run writes is replaced


def test_a_run_being_resumed_or_killed_while_resuming_stays_evaluable(data, tmp_path):
    out = tmp_path / "run"
    # without the fitted first-order term (model.linear: auto on these 1,600 rows), whose step 0 early stopping
    # may keep: the reported model is then the last one, so that the resumed run's report moves
    keep = ["--set", "train.keep_last=1", "--set", "train.eval_every=20", "--set", "train.epochs=2",
            "--set", "model.linear=false"]
    assert here(data, out, *keep, "--set", "train.max_steps=40") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000040"]
    reported = evaluate_checkpoint(out, "test")
    # the resumed process is held after step 60, its checkpoint written (keep_last=1 would prune step 40)
    release = tmp_path / "release"
    resumed = cli(data, out, *keep, "--set", "train.max_steps=80", "--resume",
                  env={FAULT_HOLD_ENV: f"60:{release}"}, wait=False)
    try:
        # the trainer's handshake: it holds now
        wait_until((tmp_path / "release.held").exists, "the resumed run's hold at step 60", procs=[resumed])
        # before: "summary.json reports the model of step 40, but .../step_00000040 is missing"
        assert evaluate_checkpoint(out, "test") == reported
    finally:
        resumed.kill()
    resumed.wait(timeout=HANG_GUARD_S)
    assert resumed.returncode == -signal.SIGKILL
    assert evaluate_checkpoint(out, "test") == reported  # killed mid-resume: the run still has its reported model

    assert here(data, out, *keep, "--set", "train.max_steps=80", "--resume") == 0
    assert json.loads((out / "summary.json").read_text())["model_step"] == 80
    # the new summary replaced the old one: the step-40 checkpoint is pruned now, as keep_last says
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000080"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [(r["step"], r["split"]) for r in rows if r["split"] != "train"]
    # each evaluation logged once: before, the final validation row repeated the step-40 and step-80 evaluations
    assert evaluated == [(20, "valid"), (40, "valid"), (40, "test"), (60, "valid"), (80, "valid"), (80, "test")]


def test_resume_drops_a_torn_last_metrics_row_and_names_a_corrupt_one(data, tmp_path):
    out = tmp_path / "run"
    killed = cli(data, out, env={FAULT_KILL_ENV: "33"})  # a checkpoint at step 20, rows up to step 30
    assert killed.returncode == -signal.SIGKILL
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    # what --resume does after loading the checkpoint of step 20 (before: a JSONDecodeError traceback)
    with pytest.raises(OutputDirError, match=rf"^{metrics}:3 is not a metrics row \('{{not json'\): the file is corrupt"):
        RunDirectory(out).trim_metrics(20)
    metrics.write_text("\n".join(lines) + '\n{"step": 35, "split": "tr')  # a write cut short by a kill
    resumed = cli(data, out, "--resume")
    # before: every --resume failed with a JSONDecodeError traceback
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{metrics}:{len(lines) + 1} is cut short" in resumed.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole again
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and max(train_steps) >= 60


def test_a_config_error_leaves_no_lock_and_overwrite_keeps_the_earlier_run(data, tmp_path):
    """A run that fails before training (here: data.path has no dataset) releases the directory, and
    with --overwrite leaves the earlier run as it was: the next run neither takes over a lock nor finds
    results missing."""
    out = tmp_path / "run"
    assert cli(data, out, "--set", "train.max_steps=5").returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert {"summary.json", "run.json", "metrics.jsonl"} <= {str(p) for p in before}
    missing = tmp_path / "no-such-dataset"
    for run_dir, extra in ((out, ["--overwrite"]), (tmp_path / "fresh", [])):
        failed = cli(missing, run_dir, "--set", "train.max_steps=5", "--set", "data.generate=null", *extra)
        assert failed.returncode == 2, failed.stderr[-3000:]
        (line,) = failed.stderr.strip().splitlines()
        assert line.startswith(f"error: data.path={str(missing)!r} has no metadata.json"), line
        assert (run_dir / ".lock").read_text() == ""  # released: the next run finds no lock to take over
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before  # the earlier run intact, byte for byte
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == [".lock"]
    replaced = cli(data, out, "--set", "train.max_steps=5", "--overwrite")
    assert replaced.returncode == 0 and "taking over the lock" not in replaced.stderr, replaced.stderr[-3000:]
