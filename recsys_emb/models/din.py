"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018): attention
of a candidate item over the user's behaviour history, Dice, and mini-batch aware regularisation.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from recsys_emb.errors import InvalidInputError
from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, split_by_keys
from recsys_emb.models.layers import ACTIVATIONS, MLP, AttentionPooling, SumPooling, check_widths, dense_autocast
from recsys_emb.specs import FeatureSpec

__all__ = ["DIN"]

logger = logging.getLogger(__name__)


class DIN(nn.Module):
    """Deep Interest Network over EmbeddingLayers, any embedding variant per feature.

    Inputs for a batch of ``B`` samples:

    * ``sparse``: a KeyedJaggedTensor with the keys of ``profile_features`` (pooled bags, e.g. user
      id, gender) and of every ``(candidate, history)`` pair of ``item_features``: each candidate key
      holds exactly one id per sample; the history keys hold the behaviours (``L_b`` ids for sample
      ``b``, the same ``L_b`` for every pair, e.g. item and category of each clicked item).
    * ``dense``: ``(B, dense_in)`` float32, or None when ``dense_in == 0``.

    Computation (``Dc`` = sum of the candidates' output dims):

    * candidate ``c``: concat over pairs of the candidate embeddings, ``(B, Dc)``;
    * history: per position, concat over pairs of the history rows, ``(N, Dc)`` with
      ``N = sum_b L_b`` rows grouped by sample (the jagged form of a padded ``(B, T, Dc)`` history
      with mask, ``T = max L_b``);
    * interest: :class:`~recsys_emb.models.layers.AttentionPooling`, i.e. the local activation unit
      (an MLP over ``[h, c, h - c, h * c]``) gives an un-normalised weight ``w_t`` per valid position
      (no softmax, as in the paper) and the interest is ``sum_t w_t h_t``, ``(B, Dc)``. The unit runs
      on the valid positions only, so padding never enters the sums nor Dice's batch statistics;
      an empty history gives a zero vector. With ``use_attention=False``: plain sum pooling
      (the paper's "base model" ablation);
    * MLP over ``[profile embeddings, dense, c, interest]`` with ``activation`` (Dice by default) ->
      one logit: ``forward`` returns ``(B,)``.

    Candidate and history features live in ONE :class:`~recsys_emb.layer.SequenceEmbeddingLayer`
    (``self.sequences``); the history spec names its candidate in ``shared_with``, so both read the
    same table. Profile features are in ``self.profile`` (an EmbeddingLayer, or None).

    Mini-batch aware regularisation (paper section 4.3.2): :meth:`regularization` returns, for the
    last forward, ``mba_lambda * sum over sequence tables of sum_{unique id j in the batch}
    ||w_j||^2 / n_j``, where ``w_j`` is id ``j``'s embedding (the table row for ``Full``; the
    per-id combined vector for other variants) and ``n_j`` its training-data frequency from
    ``frequencies`` (default 1). A candidate id that also appears in histories counts once. It is
    differentiable w.r.t. the looked-up rows only, so with fused (sharded) tables its gradient
    reaches exactly the rows of the batch through the lookup's backward.

    Args:
        sequences: the candidate and history features (``pooling="none"``; each history with
            ``shared_with=<candidate>``, so both read one table) in one built
            :class:`~recsys_emb.layer.SequenceEmbeddingLayer`.
        item_pairs: ``(candidate name, history name)`` pairs, covering every feature of ``sequences``.
        profile: the pooled profile features' :class:`~recsys_emb.layer.EmbeddingLayer`, or None.
        dense_in: number of dense features (0 = none).
        attention_mlp: hidden widths of the activation unit (paper: 80, 40).
        mlp: hidden widths of the final MLP (paper: 200, 80).
        use_attention: False replaces attention with sum pooling.
        activation: ``"dice"``, ``"prelu"`` or ``"relu"`` for both MLPs.
        mba_lambda: weight of the mini-batch aware L2 term (0 = off; :meth:`regularization` is then 0).
        frequencies: ``{candidate name: (cardinality,) counts of each id in the training data}``
            for the MBA term (ids ``>= 0``; counts below 1 are treated as 1).
        dropout: dropout probability after each hidden layer of the final MLP (training only).
        autocast: e.g. ``torch.bfloat16``: attention pooling and the final MLP run under ``torch.autocast``
            in that dtype (the lookups stay float32, the logits are returned in float32); ``None``: float32.

    Example:
        >>> from recsys_emb.layer import kjt_from_lists
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> item = FeatureSpec("item", Full(dim=8), cardinality=100, pooling="none")
        >>> hist = FeatureSpec("hist_item", Full(dim=8), cardinality=100, pooling="none", shared_with="item")
        >>> user = FeatureSpec("user", Full(dim=4), cardinality=10)
        >>> model = DIN(SequenceEmbeddingLayer([item, hist]), [("item", "hist_item")],
        ...             profile=EmbeddingLayer([user]), attention_mlp=(16,), mlp=(32,), mba_lambda=0.01)
        >>> batch = kjt_from_lists({"user": [[1], [2]], "item": [[5], [7]], "hist_item": [[1, 2, 5], []]})
        >>> model(None, batch).shape, model.regularization().shape
        (torch.Size([2]), torch.Size([]))
    """

    def __init__(
        self,
        sequences: SequenceEmbeddingLayer,
        item_pairs: Sequence[Tuple[str, str]],
        profile: Optional[EmbeddingLayer] = None,
        dense_in: int = 0,
        attention_mlp: Sequence[int] = (80, 40),
        mlp: Sequence[int] = (200, 80),
        use_attention: bool = True,
        activation: str = "dice",
        mba_lambda: float = 0.0,
        frequencies: Optional[Mapping[str, torch.Tensor]] = None,
        dropout: float = 0.0,
        autocast: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.autocast = autocast
        if not isinstance(sequences, SequenceEmbeddingLayer):
            raise TypeError(f"DIN takes its candidate and history features as a built SequenceEmbeddingLayer; got "
                            f"{type(sequences).__name__}")
        if profile is not None and not isinstance(profile, EmbeddingLayer):
            raise TypeError(f"DIN's profile features are a built EmbeddingLayer or None; got {type(profile).__name__}")
        pairs = self._check_pairs(sequences, item_pairs)
        if isinstance(dense_in, bool) or not isinstance(dense_in, int) or dense_in < 0:
            raise ValueError(f"dense_in={dense_in!r} must be an int >= 0 (0 = no dense features)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} must be one of {ACTIVATIONS}")
        if isinstance(mba_lambda, bool) or not isinstance(mba_lambda, (int, float)) or not mba_lambda >= 0:
            raise ValueError(f"mba_lambda={mba_lambda!r} must be a number >= 0 (0 = no regularisation)")
        hidden = check_widths("mlp", mlp, allow_empty=True)
        att_hidden = check_widths("attention_mlp", attention_mlp, allow_empty=True)
        profile_names = profile.feature_names if profile is not None else []
        dup = sorted(set(profile_names) & set(sequences.feature_names))
        if dup:
            raise ValueError(f"feature name(s) {dup} appear in both the profile and the sequence layer")
        self.profile = profile
        self.sequences = sequences
        self.candidate_names: List[str] = [c.name for c, _ in pairs]
        self.history_names: List[str] = [h.name for _, h in pairs]
        self.profile_names: List[str] = list(profile_names)
        self.dense_in = dense_in
        self.candidate_dim = sum(c.output_dim for c, _ in pairs)
        self.use_attention = bool(use_attention)
        self.mba_lambda = float(mba_lambda)
        self.pooling: SumPooling = (AttentionPooling(self.candidate_dim, att_hidden, activation)
                                    if self.use_attention else SumPooling())
        profile_dim = self.profile.output_dim if self.profile is not None else 0
        self.mlp_in_dim = profile_dim + dense_in + 2 * self.candidate_dim
        self.mlp = MLP(self.mlp_in_dim, hidden, activation=activation, out_dim=1, dropout=dropout)

        self._inv_freq_names: Dict[str, str] = {}
        for name, counts in (frequencies or {}).items():
            spec = next((c for c, _ in pairs if c.name == name), None)
            if spec is None:
                raise ValueError(f"frequencies has key {name!r}, which is not a candidate feature; keys must be "
                                 f"among {self.candidate_names}")
            counts = torch.as_tensor(counts)
            if spec.cardinality is None or counts.dim() != 1 or counts.numel() != spec.cardinality:
                raise ValueError(f"frequencies[{name!r}] must be a 1-D tensor of {spec.cardinality} counts "
                                 f"(one per id of a feature with a cardinality); got shape {tuple(counts.shape)}")
            buffer = f"_inv_freq_{name}"
            self.register_buffer(buffer, 1.0 / counts.float().clamp(min=1.0), persistent=False)
            self._inv_freq_names[name] = buffer
        self._last_reg: Optional[torch.Tensor] = None

    @staticmethod
    def _check_pairs(sequences: SequenceEmbeddingLayer, item_pairs: Sequence[Tuple[str, str]]
                     ) -> List[Tuple[FeatureSpec, FeatureSpec]]:
        pairs = list(item_pairs)
        if not pairs:
            raise ValueError("DIN needs at least one (candidate, history) pair in item_pairs")
        specs = {f.name: f for f in sequences.features}
        out = []
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
                raise ValueError(f"item_pairs entries must be (candidate name, history name) pairs; got {pair!r}")
            missing = [n for n in pair if n not in specs]
            if missing:
                raise ValueError(f"item_pairs names {missing}, which the sequence layer does not have; its features: "
                                 f"{sequences.feature_names}")
            cand, hist = specs[pair[0]], specs[pair[1]]
            if hist.shared_with != cand.name:
                raise ValueError(f"history feature {hist.name!r} must have shared_with={cand.name!r} (its candidate) "
                                 f"so both read one table; got shared_with={hist.shared_with!r}")
            out.append((cand, hist))
        unpaired = sorted(set(specs) - {f.name for pair in out for f in pair})
        if unpaired:
            raise ValueError(f"sequence feature(s) {unpaired} belong to no item_pairs entry; pair each candidate "
                             f"with its history, or leave them out of the sequence layer")
        return out

    # ------------------------------------------------------------------ forward
    def _lookup(self, seq: KeyedJaggedTensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                      Dict[str, JaggedTensor]]:
        """Candidate ``(B, Dc)``, history rows ``(N, Dc)``, history lengths ``(B,)`` and the per-feature
        JaggedTensors of the sequence layer."""
        rows = self.sequences(seq)
        batch = seq.stride()
        cand_len = torch.stack([rows[n].lengths() for n in self.candidate_names])
        hist_len = torch.stack([rows[n].lengths() for n in self.history_names])
        bad = torch.cat([(cand_len != 1).any(1), (hist_len != hist_len[:1]).any(1)])
        if bool(bad.any()):
            flags = bad.tolist()
            k = len(self.candidate_names)
            for name, lengths, flag in zip(self.candidate_names, cand_len, flags[:k]):
                if flag:
                    raise InvalidInputError(
                        f"candidate feature {name!r} must hold exactly one id per sample; got lengths "
                        f"{lengths.tolist()[:10]}{' ...' if batch > 10 else ''}")
            for name, lengths, flag in zip(self.history_names, hist_len, flags[k:]):
                if flag:
                    raise InvalidInputError(
                        f"history feature {name!r} has lengths {lengths.tolist()[:10]} but "
                        f"{self.history_names[0]!r} has {hist_len[0].tolist()[:10]}; the histories of all "
                        f"item_features pairs must have equal lengths per sample")
        candidate = torch.cat([rows[n].values() for n in self.candidate_names], dim=1)
        history = torch.cat([rows[n].values() for n in self.history_names], dim=1)
        return candidate, history, hist_len[0], rows

    def forward(self, dense: Optional[torch.Tensor], sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``dense (B, dense_in)`` or None, ``sparse`` KJT -> logits ``(B,)``."""
        seq_keys = [n for pair in zip(self.candidate_names, self.history_names) for n in pair]
        if self.profile is not None:
            profile_kjt, seq_kjt = split_by_keys(sparse, [self.profile_names, seq_keys])
        else:
            profile_kjt, (seq_kjt,) = None, split_by_keys(sparse, [seq_keys])
        candidate, history, lengths, rows = self._lookup(seq_kjt)
        profile = self.profile(profile_kjt).values() if self.profile is not None else None
        logits = self.head(dense, profile, candidate, history, lengths)
        self._last_reg = self._mba(seq_kjt, rows) if self.mba_lambda > 0 else None
        return logits

    def head(self, dense: Optional[torch.Tensor], profile: Optional[torch.Tensor], candidate: torch.Tensor,
             history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The dense part after the embedding lookups: ``dense (B, dense_in)`` (None when ``dense_in == 0``),
        ``profile (B, P)`` (the profile layer's output; None without profile features), ``candidate (B, Dc)``,
        ``history (N, Dc)`` rows grouped by sample with ``lengths (B,)`` -> logits ``(B,)``. It reads no
        embedding table, so an inference module that looks rows up its own way
        (:func:`recsys_emb.inference.inference_module`) scores with the model's own dense part."""
        parts: List[torch.Tensor] = []
        if profile is not None:
            parts.append(profile)
        if self.dense_in > 0:
            if dense is None or dense.dim() != 2 or dense.shape[1] != self.dense_in:
                shape = None if dense is None else tuple(dense.shape)
                raise ValueError(f"DIN expects dense features of shape (B, {self.dense_in}); got {shape}")
            parts.append(dense)
        elif dense is not None and dense.numel() > 0:
            raise ValueError(f"DIN was built with dense_in=0 but got dense features of shape {tuple(dense.shape)}; "
                             f"pass None (or rebuild with dense_in={dense.shape[-1]})")
        with dense_autocast(candidate, self.autocast):  # attention and MLP; the lookups stay float32
            parts += [candidate, self.pooling.forward_jagged(history, lengths, candidate)]
            logits = self.mlp(torch.cat(parts, dim=1)).squeeze(1)
        return logits.float()

    # ------------------------------------------------------------------ regularisation
    def _mba(self, seq: KeyedJaggedTensor, rows: Dict[str, JaggedTensor]) -> torch.Tensor:
        ids = seq.to_dict()
        total = rows[self.candidate_names[0]].values().new_zeros(())
        for cand, hist in zip(self.candidate_names, self.history_names):
            values = torch.cat([rows[cand].values(), rows[hist].values()])
            table_ids = torch.cat([ids[cand].values(), ids[hist].values()])
            # Each occurrence weighs 1 / (its id's count in the batch): the sum over occurrences is then
            # the sum over unique ids, and the gradient lands on the looked-up rows (no dense table grad).
            _, inverse, counts = torch.unique(table_ids, return_inverse=True, return_counts=True)
            weight = 1.0 / counts.index_select(0, inverse).to(values.dtype)
            buffer = self._inv_freq_names.get(cand)
            if buffer is not None:
                weight = weight * getattr(self, buffer).index_select(0, table_ids)
            total = total + (weight * values.pow(2).sum(1)).sum()
        return self.mba_lambda * total

    def regularization(self) -> torch.Tensor:
        """The mini-batch aware L2 term of the last forward (a scalar; 0 when ``mba_lambda == 0``), plus the
        profile layer's own row L2 (:meth:`~recsys_emb.layer.EmbeddingLayer.regularization`, when its ``l2``
        is set).

        Add it to the loss before ``backward``: ``loss = bce(model(dense, kjt), y) + model.regularization()``
        (``dmp.module.regularization()`` for a DistributedModelParallel-wrapped model)."""
        profile = self.profile.regularization() if self.profile is not None else torch.zeros(())
        if self._last_reg is None:
            if self.mba_lambda > 0:
                raise RuntimeError("DIN.regularization() needs a forward pass first (it regularises the rows "
                                   "that forward looked up)")
            return profile
        return self._last_reg + profile
