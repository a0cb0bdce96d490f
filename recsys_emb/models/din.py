"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018): attention
of a candidate item over the user's behaviour history, Dice, and mini-batch aware regularisation.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from recsys_emb.errors import InvalidInputError
from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, batch_row_counts, split_by_keys
from recsys_emb.models.layers import ACTIVATIONS, MLP, AttentionPooling, SumPooling, check_widths, dense_autocast
from recsys_emb.errors import SpecError
from recsys_emb.specs import (
    DIM_MULTIPLE,
    EmbeddingSpec,
    FeatureSpec,
    Full,
    LowRank,
    MixedDimension,
    QuotientRemainder,
    Robe,
    Unified,
    UnifiedTable,
)

__all__ = ["DIN", "ATTENTION_SUFFIX", "attention_name", "default_attention_dim", "attention_specs"]

logger = logging.getLogger(__name__)


ATTENTION_SUFFIX = "_att"
"""Appended to a sequence feature's name (and a unified table's) to name its attention twin."""


def attention_name(name: str) -> str:
    """The name of feature (or unified table) ``name``'s attention twin.

    Example:
        >>> attention_name("hist_item")
        'hist_item_att'
    """
    return name + ATTENTION_SUFFIX


def _dim_multiple(embedding: EmbeddingSpec) -> int:
    """The multiple a dim of ``embedding``'s kind must be (``concat`` QR splits it into two halves, unified into
    its chunks)."""
    if isinstance(embedding, QuotientRemainder) and embedding.op == "concat":
        return 2 * DIM_MULTIPLE
    if isinstance(embedding, Unified):  # every chunk a multiple of 4
        return embedding.chunks * DIM_MULTIPLE
    return DIM_MULTIPLE


def default_attention_dim(embedding: EmbeddingSpec) -> int:
    """The attention twin's default dim: half the representation's output dim, rounded up to the multiple
    the variant needs (at least that multiple, at most the representation's dim).

    Why half: the attention table only has to rank the behaviours by their relevance to the candidate, a
    lower-rank job than carrying the interest into the final MLP; DARE (Feng et al., "Long-Sequence
    Recommendation Models Need Decoupled Embeddings", ICLR 2025) reports that a much smaller attention
    dim costs little quality, and the activation unit's work (``4 * dim`` inputs per behaviour) halves with it,
    which is what dominates for long histories.

    Example:
        >>> default_attention_dim(Full(dim=16)), default_attention_dim(Full(dim=4))
        (8, 4)
    """
    mult = _dim_multiple(embedding)
    dim = embedding.output_dim
    half = -(-dim // 2)
    return min(dim, max(mult, -(-half // mult) * mult))


def _with_dim(embedding: EmbeddingSpec, dim: int, feature: str) -> EmbeddingSpec:
    """``embedding`` at output dim ``dim``: the same variant, rows and hashing, narrower (or wider) rows.
    A unified feature's twin reads a twin table (same rows, named by :func:`attention_name`) with salts of
    its own, a ROBE feature's twin a twin array; a mixed-dimension feature's blocks keep their share of
    the dim."""
    if isinstance(embedding, Full):
        return Full(dim)
    if isinstance(embedding, Unified):
        g = embedding.group
        if dim % embedding.chunks:
            raise SpecError(f"feature {feature!r}: attention dim {dim} does not split into its {embedding.chunks} "
                            f"unified chunks; choose a multiple of {embedding.chunks * DIM_MULTIPLE}")
        group = UnifiedTable(attention_name(g.name), g.rows, dim // embedding.chunks, g.reserved)
        return dataclasses.replace(embedding, group=group, salts=None)
    if isinstance(embedding, MixedDimension):
        round_to = embedding.round_to if dim % embedding.round_to == 0 else DIM_MULTIPLE
        blocks = None
        if embedding.block_dims is not None:
            blocks = tuple(min(dim, max(round_to, round(d * dim / embedding.base_dim / round_to) * round_to))
                           for d in embedding.block_dims)
        return dataclasses.replace(embedding, base_dim=dim, round_to=round_to, block_dims=blocks)
    if isinstance(embedding, Robe):  # a twin array (same size, named by attention_name), not the shared one
        twin = dataclasses.replace(embedding.group, name=attention_name(embedding.group.name))
        if embedding.oov_id is not None and dim > embedding.dim:
            raise SpecError(f"feature {feature!r}: attention dim {dim} is above the ROBE dim {embedding.dim}: the "
                            f"OOV id's reserved rows do not fit; choose an attention dim <= {embedding.dim}")
        return dataclasses.replace(embedding, group=twin, dim=dim)  # an OOV id keeps the first of its rows
    if isinstance(embedding, LowRank) and embedding.rank >= dim:  # nothing left to factorise at this dim
        return Full(dim)
    names = {f.name for f in dataclasses.fields(embedding)}  # type: ignore[arg-type]
    if "dim" in names:  # Hashed, QuotientRemainder, and any variant whose width is its ``dim``
        return dataclasses.replace(embedding, dim=dim)  # type: ignore[type-var]
    raise SpecError(f"feature {feature!r}: its variant {embedding.kind!r} has no dim to narrow for an attention "
                    f"twin; use decoupled embeddings with full, hashed, qr, mixed or unified features")


def attention_specs(features: Sequence[FeatureSpec], dim: Optional[int] = None) -> List[FeatureSpec]:
    """The attention twins of DIN's sequence features (DARE's decoupled embeddings): for each feature, one
    named :func:`attention_name` with the same variant, cardinality, pooling and sharing (a history twin
    shares its candidate twin's table), at attention dim ``dim`` (None: :func:`default_attention_dim` of
    each feature). The twins' tables are separate from the representation tables, so the attention
    scores and the pooled interest are learnt from different rows.

    Args:
        features: the representation features (candidates and their histories), e.g. ``sequences.features``.
        dim: the attention dim of every twin, a multiple of 4 (of 8 for ``concat`` QR); None: the default.

    Example:
        >>> item = FeatureSpec("item", Full(dim=16), cardinality=100, pooling="none")
        >>> hist = FeatureSpec("hist_item", Full(dim=16), cardinality=100, pooling="none", shared_with="item")
        >>> [(s.name, s.output_dim, s.shared_with) for s in attention_specs([item, hist])]
        [('item_att', 8, None), ('hist_item_att', 8, 'item_att')]
    """
    out = []
    for f in features:
        d = default_attention_dim(f.embedding) if dim is None else dim
        out.append(FeatureSpec(attention_name(f.name), _with_dim(f.embedding, d, f.name), f.cardinality, f.pooling,
                               None if f.shared_with is None else attention_name(f.shared_with)))
    return out


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

    Decoupled embeddings (DARE, Feng et al., ICLR 2025), when ``attention`` is given: a second
    SequenceEmbeddingLayer (``self.attention``) holds an attention twin of every sequence feature
    (:func:`attention_specs`: own tables, own dim ``Da``, any variant). Its rows ``c_a (B, Da)`` and
    ``h_a (N, Da)`` (looked up from the same ids) feed the activation unit only, over
    ``[h_a, c_a, h_a - c_a, h_a * c_a]``; the interest is ``sum_t w_t h_t`` over the representation rows and
    the final MLP reads the representation candidate. So the attention tables are trained by the
    scores alone and the representation tables by what the MLP reads (the candidate and the pooled
    interest).

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
        attention: the attention twins of ``sequences``' features (a SequenceEmbeddingLayer of
            :func:`attention_specs` of ``sequences.features``) for decoupled embeddings; None: the
            attention reads the representation rows (coupled, the paper's DIN). Needs ``use_attention``.

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
        attention: Optional[SequenceEmbeddingLayer] = None,
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
        self.attention = self._check_attention(attention, sequences, profile_names)
        self.decoupled = self.attention is not None
        """Decoupled embeddings: :meth:`head` takes the attention twins' rows (a flag, so a copy of the model
        without its embedding layers, the inference module's dense part, still knows)."""
        self.attention_dim = self.candidate_dim if self.attention is None else sum(
            self.attention.embedding_dims[attention_name(n)] for n in self.candidate_names)
        """``Da``: the width of the activation unit's candidate and history rows (the twins' when decoupled)."""
        self.pooling: SumPooling = (AttentionPooling(self.attention_dim, att_hidden, activation)
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

    def _check_attention(self, attention: Optional[SequenceEmbeddingLayer], sequences: SequenceEmbeddingLayer,
                         profile_names: Sequence[str]) -> Optional[SequenceEmbeddingLayer]:
        if attention is None:
            return None
        if not isinstance(attention, SequenceEmbeddingLayer):
            raise TypeError(f"DIN's attention twins are a built SequenceEmbeddingLayer or None; got "
                            f"{type(attention).__name__}")
        if not self.use_attention:
            raise ValueError("attention tables (decoupled embeddings) need use_attention=True: sum pooling "
                             "computes no attention score")
        want = [attention_name(n) for n in sequences.feature_names]
        if attention.feature_names != want:
            raise ValueError(f"the attention layer's features {attention.feature_names} must be the twins of the "
                             f"sequence features, in their order: {want} (recsys_emb.models.din.attention_specs)")
        dup = sorted(set(want) & set(profile_names))
        if dup:
            raise ValueError(f"attention twin name(s) {dup} are also profile features; rename those profile features")
        for f, twin in zip(sequences.features, attention.features):
            if twin.cardinality != f.cardinality or twin.shared_with != (
                    None if f.shared_with is None else attention_name(f.shared_with)):
                raise ValueError(f"attention twin {twin.name!r} must have {f.name!r}'s cardinality and sharing; got "
                                 f"cardinality={twin.cardinality}, shared_with={twin.shared_with!r}")
        return attention

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
        att_candidate = att_history = None
        att_rows: Dict[str, JaggedTensor] = {}
        if self.attention is not None:
            # the twins read the same ids: the same values and lengths under the twins' keys
            att_kjt = KeyedJaggedTensor(keys=[attention_name(k) for k in seq_kjt.keys()], values=seq_kjt.values(),
                                        lengths=seq_kjt.lengths(), stride=seq_kjt.stride(),
                                        length_per_key=seq_kjt.length_per_key())
            att_rows = self.attention(att_kjt)
            att_candidate = torch.cat([att_rows[attention_name(n)].values() for n in self.candidate_names], dim=1)
            att_history = torch.cat([att_rows[attention_name(n)].values() for n in self.history_names], dim=1)
        logits = self.head(dense, profile, candidate, history, lengths, att_candidate, att_history)
        self._last_reg = self._mba(seq_kjt, {**rows, **att_rows}) if self.mba_lambda > 0 else None
        return logits

    def head(self, dense: Optional[torch.Tensor], profile: Optional[torch.Tensor], candidate: torch.Tensor,
             history: torch.Tensor, lengths: torch.Tensor, att_candidate: Optional[torch.Tensor] = None,
             att_history: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The dense part after the embedding lookups: ``dense (B, dense_in)`` (None when ``dense_in == 0``),
        ``profile (B, P)`` (the profile layer's output; None without profile features), ``candidate (B, Dc)``,
        ``history (N, Dc)`` rows grouped by sample with ``lengths (B,)``, and with decoupled embeddings the
        attention twins' rows ``att_candidate (B, Da)`` and ``att_history (N, Da)`` -> logits ``(B,)``. It reads
        no embedding table, so an inference module that looks rows up its own way
        (:func:`recsys_emb.inference.inference_module`) scores with the model's own dense part."""
        if (att_candidate is None) == self.decoupled or (att_candidate is None) != (att_history is None):
            raise ValueError("DIN.head takes att_candidate and att_history exactly when the model has attention "
                             f"twins (decoupled embeddings: {self.decoupled})")
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
            parts += [candidate, self.pooling.forward_jagged(history, lengths, candidate, att_history, att_candidate)]
            logits = self.mlp(torch.cat(parts, dim=1)).squeeze(1)
        return logits.float()

    # ------------------------------------------------------------------ regularisation
    def _mba(self, seq: KeyedJaggedTensor, rows: Dict[str, JaggedTensor]) -> torch.Tensor:
        """The MBA term over ``rows`` (the representation rows and, when decoupled, the twins' rows, which
        read the same ids: each table is regularised on its own)."""
        ids = seq.to_dict()
        total = rows[self.candidate_names[0]].values().new_zeros(())
        twins = [""] + ([ATTENTION_SUFFIX] if self.decoupled else [])
        for (cand, hist), twin in ((p, t) for p in zip(self.candidate_names, self.history_names) for t in twins):
            values = torch.cat([rows[cand + twin].values(), rows[hist + twin].values()])
            table_ids = torch.cat([ids[cand].values(), ids[hist].values()])
            # Each occurrence weighs 1 / (its id's count in the batch): the sum over occurrences is then
            # the sum over unique ids, and the gradient lands on the looked-up rows (no dense table grad).
            # Under W ranks the count is over every rank's batch and the weight W times as large (the
            # ranks average their gradients): the update of one process on the global batch.
            counts, world = batch_row_counts(table_ids)
            weight = world / counts.to(values.dtype)
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
