"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", 2019) over an EmbeddingLayer, so every embedding variant plugs in by config.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import List, Optional, Sequence

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.layer import EmbeddingLayer
from recsys_emb.models.layers import (MLP, CatInteraction, CrossInteraction, DotInteraction, LinearTerm,
                                      check_widths, dense_autocast)

__all__ = ["DLRM", "INTERACTIONS", "CROSS_LAYERS", "CROSS_RANK"]

logger = logging.getLogger(__name__)

INTERACTIONS = ("dot", "cat", "dcn")

CROSS_LAYERS = 3
"""Default number of DCN-v2 cross layers: MLPerf's DLRM-DCNv2 uses 3."""
CROSS_RANK = 64
"""Default low rank of the cross layers. MLPerf's reference uses 512 on a 3,456-wide ``x_0`` (27 vectors of
dim 128, Criteo 1TB); at the Criteo Kaggle scale of this library (27 vectors of dim 16, ``x_0`` 432 wide) the
same ratio (about 1/6.75) is 64. A rank at or above ``x_0``'s width means full rank."""


class DLRM(nn.Module):
    """DLRM: bottom MLP over dense features, embeddings of sparse features, feature interaction,
    top MLP, one logit per sample.

    Shapes (``B`` samples, ``F`` sparse features, feature ``f`` with output dim ``d_f``):

    * ``dense``: ``(B, dense_in)`` float32 -> bottom MLP -> ``x`` ``(B, d)``, ``d = bottom_mlp[-1]``
      (ReLU on every layer, as in the reference).
    * ``sparse``: a KeyedJaggedTensor with one key per feature -> ``self.embeddings`` (the
      :class:`~recsys_emb.layer.EmbeddingLayer` passed in) -> ``e_f`` ``(B, d_f)``.
    * ``interaction="dot"``: the ``n = F + 1`` vectors ``[x, e_1, ..., e_F]`` (``n = F`` without dense
      features) are stacked to ``(B, n, d)``; their pairwise dot products (strictly upper triangle,
      ``n (n - 1) / 2`` values) are concatenated to ``x``: ``(B, d + n (n - 1) / 2)``. Dot products
      need one dim, so a feature whose ``d_f != d`` (mixed-dimension fields, unified features with
      another number of chunks) gets its own projection ``nn.Linear(d_f, d, bias=False)``
      (``self.projections[name]``); features already at ``d`` are used as they are. Projections exist
      only here, where the interaction needs them.
    * ``interaction="cat"``: ``[x, e_1, ..., e_F]`` concatenated, ``(B, d + sum d_f)``, no projection.
    * ``interaction="dcn"`` (DLRM-DCNv2, MLPerf's recommendation model): ``x_0 = [x, e_1, ..., e_F]``
      concatenated, ``(B, D)`` with ``D = d + sum d_f`` (no projection), through ``cross_layers`` DCN-v2
      cross layers ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with ``W_l = U_l V_l`` of rank ``cross_rank``
      (:class:`~recsys_emb.models.layers.CrossInteraction`); the top MLP reads ``x_L``, ``(B, D)``.
    * top MLP (ReLU) ending in one unit -> logits ``(B,)``.
    * ``linear=True``: plus a first-order term (:class:`~recsys_emb.models.layers.LinearTerm`: one weight
      per id of every feature, read from the input ids, and a linear map of ``dense``), as Wide & Deep and
      DeepFM add one; its weights are dense parameters (``self.linear``), penalised by ``linear_l2``
      through :meth:`regularization`.

    The model takes its embedding layer built, as TorchRec's DLRM takes its EmbeddingBagCollection:
    the tables live in ``self.embeddings`` (TorchRec collections), so
    :func:`recsys_emb.sharding.shard_model` shards them and
    :class:`recsys_emb.tables.TableBatched` moves them to the single-device kernel; every other
    parameter is dense. Build the layer with ``device=torch.device("meta")`` to leave the tables'
    allocation to either.

    Args:
        embeddings: the sparse features' layer (pooling ``sum`` or ``mean``).
        dense_in: number of dense features; 0 = none (then there is no bottom MLP).
        bottom_mlp: bottom MLP widths; the last is the interaction dim ``d``.
        top_mlp: top MLP hidden widths (a final 1-unit layer is added).
        interaction: ``"dot"``, ``"cat"`` or ``"dcn"``.
        cross_layers: ``"dcn"``'s number of cross layers (:data:`CROSS_LAYERS`, MLPerf's 3).
        cross_rank: ``"dcn"``'s low rank ``r`` of each ``W_l = U_l V_l``; 0 or None = full-rank ``W_l``
            (:data:`CROSS_RANK`: MLPerf's 512 scaled to this library's widths, see there).
        interaction_dim: the dot interaction's ``d`` when ``dense_in == 0`` (default: the most common
            feature output dim, the first such in feature order on ties).
        dropout: dropout probability after each hidden layer of the top MLP (training only).
        linear: add the first-order term (every feature needs its ``cardinality``).
        linear_l2: its L2 strength (:meth:`~recsys_emb.models.layers.LinearTerm.penalty`).
        autocast: e.g. ``torch.bfloat16``: the dense part (bottom MLP, projections, interaction, top MLP)
            runs under ``torch.autocast`` in that dtype; the lookups stay float32 and the logits are
            returned in float32. ``None``: float32 throughout.

    Example:
        >>> from recsys_emb.layer import kjt_from_lists
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=8), cardinality=10),
        ...                         FeatureSpec("b", Full(dim=4), cardinality=20)])
        >>> model = DLRM(layer, dense_in=3, bottom_mlp=(16, 8))
        >>> sorted(model.projections)  # only "b" (dim 4) is projected to d = 8
        ['b']
        >>> model.interaction_out_dim  # d + n (n - 1) / 2 with n = 3 vectors
        11
        >>> model(torch.randn(2, 3), kjt_from_lists({"a": [[1], [2]], "b": [[3], [4, 5]]})).shape
        torch.Size([2])
    """

    def __init__(
        self,
        embeddings: EmbeddingLayer,
        dense_in: int,
        bottom_mlp: Sequence[int] = (64, 32),
        top_mlp: Sequence[int] = (64, 32),
        interaction: str = "dot",
        interaction_dim: Optional[int] = None,
        dropout: float = 0.0,
        autocast: Optional[torch.dtype] = None,
        cross_layers: int = CROSS_LAYERS,
        cross_rank: Optional[int] = CROSS_RANK,
        linear: bool = False,
        linear_l2: float = 0.0,
    ) -> None:
        super().__init__()
        self.autocast = autocast
        if not isinstance(embeddings, EmbeddingLayer):
            raise TypeError(f"DLRM takes a built EmbeddingLayer (EmbeddingLayer(feature specs)); got "
                            f"{type(embeddings).__name__}")
        features = embeddings.features
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction={interaction!r} must be 'dot', 'cat' or 'dcn'")
        if isinstance(dense_in, bool) or not isinstance(dense_in, int) or dense_in < 0:
            raise ValueError(f"dense_in={dense_in!r} must be an int >= 0 (0 = no dense features)")
        top = check_widths("top_mlp", top_mlp, allow_empty=True)
        if interaction_dim is not None and (isinstance(interaction_dim, bool) or not isinstance(interaction_dim, int)
                                            or interaction_dim < 1):
            raise ValueError(f"interaction_dim={interaction_dim!r} must be an int >= 1 or None")
        self.embeddings = embeddings
        self.interaction = interaction
        self.dense_in = dense_in
        dims = self.embeddings.output_dims
        self.output_dims: List[int] = list(dims)
        self.bottom: Optional[MLP] = None
        if dense_in > 0:
            bottom = check_widths("bottom_mlp", bottom_mlp)
            if interaction_dim is not None and interaction_dim != bottom[-1]:
                raise ValueError(f"interaction_dim={interaction_dim} differs from bottom_mlp[-1]={bottom[-1]}; with "
                                 f"dense features the interaction dim is the bottom MLP's last width (leave "
                                 f"interaction_dim unset)")
            self.bottom = MLP(dense_in, bottom, activation="relu")
            d = bottom[-1]
        else:
            d = interaction_dim if interaction_dim is not None else Counter(dims).most_common(1)[0][0]
        self.interaction_dim = d
        n_vectors = len(features) + (1 if dense_in > 0 else 0)
        dense_width = d if dense_in > 0 else 0
        self.projections = nn.ModuleDict()
        if interaction == "dot":
            if n_vectors < 2:
                raise ValueError(f"interaction='dot' needs >= 2 vectors (dense_in > 0 or >= 2 features); got "
                                 f"dense_in={dense_in} and {len(features)} feature(s). Use interaction='cat'")
            for f, dim in zip(features, dims):
                if dim != d:
                    self.projections[f.name] = nn.Linear(dim, d, bias=False)
            self.interact: nn.Module = DotInteraction(n_vectors)
            self.interaction_out_dim = dense_width + DotInteraction.output_dim_for(n_vectors)
        elif interaction == "dcn":
            self.interact = CrossInteraction(dense_width + sum(dims), num_layers=cross_layers, rank=cross_rank)
            self.interaction_out_dim = self.interact.output_dim
        else:
            self.interact = CatInteraction()
            self.interaction_out_dim = dense_width + sum(dims)
        self.top = MLP(self.interaction_out_dim, top, activation="relu", out_dim=1, dropout=dropout)
        self._project: List[Optional[str]] = [f.name if f.name in self.projections else None for f in features]
        self.linear: Optional[LinearTerm] = None
        if linear:
            missing = [f.name for f in features if not f.cardinality]
            if missing:
                raise ValueError(f"linear=True needs every feature's cardinality (one weight per id); "
                                 f"{missing} have none")
            self.linear = LinearTerm([int(f.cardinality or 0) for f in features], [f.pooling for f in features],
                                     dense_in=dense_in, l2=linear_l2)
        logger.debug("DLRM: %d features, interaction=%s, d=%d, projected=%s, top input=%d", len(features),
                     interaction, d, sorted(self.projections), self.interaction_out_dim)

    @property
    def feature_names(self) -> List[str]:
        return self.embeddings.feature_names

    def regularization(self) -> torch.Tensor:
        """The embedding layer's L2 penalty of the last training forward (see
        :meth:`~recsys_emb.layer.EmbeddingLayer.regularization`) plus the linear term's
        (:meth:`~recsys_emb.models.layers.LinearTerm.penalty`): add it to the loss."""
        reg = self.embeddings.regularization()
        if self.linear is not None and self.linear.l2 > 0:
            reg = reg + self.linear.penalty()
        return reg

    def forward(self, dense: Optional[torch.Tensor], sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``dense (B, dense_in)`` (None when ``dense_in == 0``), ``sparse`` KJT -> logits ``(B,)``."""
        logits = self.head(dense, self.embeddings(sparse).values())
        if self.linear is not None:
            jts = [sparse[name] for name in self.feature_names]
            logits = logits + self.linear(dense, [jt.values() for jt in jts], [jt.lengths() for jt in jts])
        return logits

    def head(self, dense: Optional[torch.Tensor], embedded: torch.Tensor) -> torch.Tensor:
        """The dense part after the embedding lookup: ``dense (B, dense_in)`` (None when ``dense_in == 0``)
        and ``embedded (B, sum d_f)`` (every feature's output columns side by side, in feature order) ->
        logits ``(B,)``. It reads no embedding table, so an inference module that looks rows up its own way
        (:func:`recsys_emb.inference.inference_module`) scores with the model's own dense part. Under
        ``autocast`` it runs in bfloat16; the logits are float32. Without :attr:`linear`'s term, which reads
        the ids (:meth:`forward` adds it)."""
        parts = list(embedded.split(self.output_dims, dim=1))
        with dense_autocast(embedded, self.autocast):  # the dense part; the lookups stay float32
            vectors: List[torch.Tensor] = []
            if self.bottom is not None:
                if dense is None or dense.dim() != 2 or dense.shape[1] != self.dense_in:
                    shape = None if dense is None else tuple(dense.shape)
                    raise ValueError(f"DLRM expects dense features of shape (B, {self.dense_in}); got {shape}")
                vectors.append(self.bottom(dense))
            elif dense is not None and dense.numel() > 0:
                raise ValueError(f"DLRM was built with dense_in=0 but got dense features of shape "
                                 f"{tuple(dense.shape)}; pass None (or rebuild with dense_in={dense.shape[-1]})")
            if self.interaction == "dot":
                vectors += [e if name is None else self.projections[name](e)
                            for name, e in zip(self._project, parts)]
                out = self.interact(torch.stack(vectors, dim=1))
                if self.bottom is not None:
                    out = torch.cat([vectors[0], out], dim=1)
            else:
                out = self.interact(vectors + parts)
            logits = self.top(out).squeeze(1)
        return logits.float()
