"""The objective of a search trial: the trial's choices -> a train config -> its embedding bytes, counted
from the feature specs before anything is built -> (within the budget) a short training whose validation
AUC is the trial's value, reported at every evaluation for pruning.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from recsys_emb.config import RunConfig, config_from_dict
from recsys_emb.data.parquet import read_metadata, schema_from_metadata
from recsys_emb.memory import memory_from_specs
from recsys_emb.training import build_features, prepare_data, train
from recsys_emb.search.callbacks import MaxTrainedTrialsCallback
from recsys_emb.search.config import SearchConfig
from recsys_emb.search.space import fill_budget, field_groups, trial_choices, uniform_choices

__all__ = ["trial_run_config"]

logger = logging.getLogger(__name__)


def trial_run_config(config: SearchConfig, choices: Mapping[str, Any], run_dict: Optional[Dict[str, Any]] = None,
                     out_dir: Optional[str] = None, name: Optional[str] = None) -> RunConfig:
    """A RunConfig from a train config dict and a trial's ``{"dims": ..., "overrides": ...}``.

    Args:
        config: the search config.
        choices: a trial's choices (its user attribute ``embeddings``): ``dims`` maps fields to dims,
            ``overrides`` fields to embedding dicts; an override wins over a dim for the same field. A
            uniform trial's ``preset`` (``{variant, dim, compression}``) replaces the base config's
            ``embeddings`` values of those names and drops its per-field dims and overrides.
        run_dict: the train config to start from; default ``config.trial_run_dict()`` (the short trial
            training); the search report passes ``config.base_run_dict()``.
        out_dir, name: ``train.out_dir`` and ``name`` of the result.

    Example:
        >>> from recsys_emb.search.config import load_search_config
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
        >>> run = trial_run_config(cfg, {"dims": {"C1": 8, "C2": 32}, "overrides": {}})
        >>> run.embeddings.dims["C1"], run.embeddings.dims["C2"], run.train.max_steps
        (8, 32, 300)
    """
    data = copy.deepcopy(run_dict if run_dict is not None else config.trial_run_dict())
    emb = data["embeddings"]
    if choices.get("preset"):
        emb.update(copy.deepcopy(dict(choices["preset"])))
        emb["dims"], emb["overrides"] = {}, {}
    emb["dims"] = {**emb.get("dims", {}), **dict(choices.get("dims", {}))}
    emb["overrides"] = {**emb.get("overrides", {}), **copy.deepcopy(dict(choices.get("overrides", {})))}
    for f in choices.get("overrides", {}):  # an override wins over a dim for the same field
        emb["dims"].pop(f, None)
    if out_dir is not None:
        data["train"]["out_dir"] = out_dir
    if name is not None:
        data["name"] = name
    return config_from_dict(data)


def _load_schema(cfg: RunConfig) -> Any:
    path = Path(cfg.data.path)
    if not (path / "metadata.json").exists():
        # several workers on one machine may start together: one generates, the others wait
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            prepare_data(cfg)
    return schema_from_metadata(read_metadata(path))


class _Objective:
    """``objective(trial)``: trial choices -> bytes (from specs, before anything is built) -> short training.

    ``trials`` (the worker's :class:`MaxTrainedTrialsCallback`) makes a trial numbered after the study
    filled up stop before training, as PRUNED with user attribute ``surplus``.
    """

    def __init__(self, config: SearchConfig, study_name: str, out: Path,
                 trials: Optional[MaxTrainedTrialsCallback] = None) -> None:
        self.config = config
        self.out = out
        self.multi = config.mode == "multi"
        self.run_dict = config.trial_run_dict()
        self.run_dict["train"]["progress"] = False
        self.run_dict["train"]["checkpoint_every"] = 0
        self.study_name = study_name
        self.schema = _load_schema(config_from_dict(self.run_dict))
        self.cards = {k: int(self.schema.vocab_sizes[k]) for k in (*self.schema.sparse, *self.schema.jagged)}
        self.groups = field_groups(config.space, list(self.schema.sparse) + list(self.schema.jagged))
        self.trials = trials

    def choices(self, trial: Any) -> Dict[str, Any]:
        return trial_choices(trial, self.config.space, self.groups, self.cards, self.run_dict)

    def bytes_of(self, cfg: RunConfig) -> int:
        specs, _ = build_features(cfg, self.schema)
        return int(memory_from_specs(specs).bytes)

    def measure(self, choices: Mapping[str, Any]) -> int:
        """Embedding bytes of a trial's choices (from the feature specs; nothing is built)."""
        return self.bytes_of(trial_run_config(self.config, choices, self.run_dict))

    def filled_choices(self, trial: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``(choices, fill info)``: the trial's draw scaled to the budget
        (:func:`~recsys_emb.search.space.fill_budget`), or as drawn (info empty) without ``fill_budget``,
        in multi mode or without a budget."""
        budget = self.config.budget_bytes
        if self.multi or not self.config.fill_budget or budget is None:
            return self.choices(trial), {}
        choices, _, info = fill_budget(trial, self.config.space, self.groups, self.cards, self.run_dict,
                                       self.measure, budget)
        return choices, info

    def uniform(self) -> List[Tuple[str, Dict[str, Any], int]]:
        """The uniform configurations at the budget (:func:`~recsys_emb.search.space.uniform_choices`) over
        ``space.variants`` (the base config's variant when it is empty), at the base config's dim."""
        emb = self.run_dict["embeddings"]
        variants = list(self.config.space.variants) or [str(emb["variant"])]
        assert self.config.budget_bytes is not None
        return uniform_choices(variants, self.config.space, int(emb["dim"]), self.measure, self.config.budget_bytes)

    def __call__(self, trial: Any) -> Union[float, Tuple[float, float]]:
        import optuna

        uniform = trial.user_attrs.get("uniform")
        fill: Dict[str, Any]
        if uniform is not None:  # an enqueued uniform configuration: its choices came with it
            choices, fill = dict(trial.user_attrs["embeddings"]), {}
        else:
            choices, fill = self.filled_choices(trial)
            for key, value in fill.items():
                trial.set_user_attr(key, value)
        trial_dir = self.out / f"trial_{trial.number}"
        cfg = trial_run_config(self.config, choices, self.run_dict, out_dir=str(trial_dir),
                               name=f"{self.study_name}-trial-{trial.number}")
        n_bytes = self.bytes_of(cfg)
        trial.set_user_attr("bytes", n_bytes)
        trial.set_user_attr("embeddings", choices)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        budget = self.config.budget_bytes
        if budget is not None:
            trial.set_user_attr("budget_use", n_bytes / budget)
            # Recorded as a constraint too (> 0 = infeasible), which Optuna 5's samplers read, so a
            # trial over budget can never be the best one.
            trial.set_constraint("bytes_over_budget", float(n_bytes - budget))
        over = budget is not None and n_bytes > budget
        trial.set_user_attr("over_budget", bool(over))
        if over:
            logger.info("trial %d: %d bytes > budget %d; not trained", trial.number, n_bytes, budget)
            raise optuna.TrialPruned(f"{n_bytes} bytes over the budget of {budget}")
        if self.trials is not None and self.trials.surplus(trial):
            # Another worker started the last trial between this worker's count and this trial's
            # creation: the study already holds n_trials trained trials, so this one is not trained.
            trial.set_user_attr("surplus", True)
            total = self.trials.n_trials
            logger.info("trial %d: the study already holds %d trained trials; not trained", trial.number, total)
            raise optuna.TrialPruned(f"surplus: the study already holds n_trials={total} trained trials")

        def on_eval(step: int, metrics: Dict[str, Any]) -> None:
            auc = float(metrics["auc"])
            if self.multi:  # Optuna does not prune multi-objective trials: keep a record only
                trial.set_user_attr(f"valid_auc_step_{step}", auc)
                return
            if math.isfinite(auc):
                trial.report(auc, step)
            if uniform is None and trial.should_prune():  # the uniform baselines run to the end
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned(f"valid AUC {auc:.4f} at step {step}")

        try:
            # a trial that keeps no checkpoints keeps no model either: none is written
            summary = train(cfg, on_eval=on_eval, write_model=self.config.keep_checkpoints)
        finally:
            if not self.config.keep_checkpoints:
                shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
        auc = float(summary["valid"]["auc"])
        trial.set_user_attr("test_auc", float(summary["test"]["auc"]))
        trial.set_user_attr("valid_logloss", float(summary["valid"]["logloss"]))
        trial.set_user_attr("trained_bytes", int(summary["embedding_bytes"]))
        if "ceiling_auc" in summary["test"]:
            trial.set_user_attr("test_ceiling_auc", float(summary["test"]["ceiling_auc"]))
        if int(summary["embedding_bytes"]) != n_bytes:
            logger.warning("trial %d: bytes from specs %d != bytes of the trained model %d", trial.number, n_bytes,
                           summary["embedding_bytes"])
        return (auc, float(n_bytes)) if self.multi else auc
