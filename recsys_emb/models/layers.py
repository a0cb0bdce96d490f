"""Dense building blocks of the CTR models: MLP, Dice, DLRM's dot / concatenation / DCN-v2 cross
interaction and DIN's local activation unit (attention pooling over a behaviour history).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "dense_autocast",
    "ACTIVATIONS",
    "Dice",
    "MLP",
    "make_activation",
    "DotInteraction",
    "CatInteraction",
    "CrossInteraction",
    "AttentionPooling",
    "SumPooling",
    "check_widths",
    "LinearTerm",
    "LINEAR_SCALE",
]

logger = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "prelu", "dice")
"""Hidden-layer activations an :class:`MLP` accepts."""


def check_widths(name: str, widths: Sequence[int], allow_empty: bool = False) -> List[int]:
    """``widths`` as a list of ints >= 1; a ValueError naming ``name`` otherwise."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"{name}={widths!r} must be a sequence of layer widths (ints >= 1), e.g. (64, 32)")
    out = list(widths)
    if not out and not allow_empty:
        raise ValueError(f"{name}={widths!r} must hold at least one layer width (ints >= 1), e.g. (64, 32)")
    for w in out:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{name}={widths!r} must hold ints >= 1 (layer widths); got {w!r}")
    return out


class Dice(nn.Module):
    """Data-adaptive activation of DIN (Zhou et al., KDD 2018, eq. 6).

    ``p = sigmoid(BN(x))`` with a parameter-free batch norm (``affine=False``), and
    ``out = p * x + (1 - p) * alpha * x`` with ``alpha`` learned per feature, initialised to 0.
    Statistics are taken over all dimensions but the last: inputs ``(B, C)`` and ``(B, T, C)`` (or
    any ``(..., C)``) are accepted. Training uses batch statistics and updates running estimates
    (momentum 0.1, as ``nn.BatchNorm1d``); evaluation uses the running estimates.

    The normalisation is written out rather than delegated to ``nn.BatchNorm1d`` so that a batch
    with a single row (or none) is valid: DIN runs Dice over the valid history positions of a
    batch, which may be few.

    Args:
        num_features: ``C``, the size of the last dimension.
        eps: added to the variance (the paper uses 1e-8).

    Example:
        >>> dice = Dice(4)
        >>> dice(torch.randn(8, 4)).shape, dice(torch.randn(2, 5, 4)).shape
        (torch.Size([8, 4]), torch.Size([2, 5, 4]))
    """

    running_mean: torch.Tensor  # buffers
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., C)`` -> same shape."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"Dice({self.num_features}) got input of shape {tuple(x.shape)}; the last dim must "
                             f"be {self.num_features}")
        flat = x.reshape(-1, self.num_features)
        if self.training and flat.shape[0] > 0:
            mean = flat.mean(0)
            var = flat.var(0, unbiased=False)
            with torch.no_grad():
                n = flat.shape[0]
                unbiased = var * (n / (n - 1)) if n > 1 else var
                # the running statistics stay float32 when the activations are bf16 (autocast)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) * torch.rsqrt(var + self.eps))
        return x * (p + (1 - p) * self.alpha)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_activation(name: str, width: int) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`) for ``width`` features."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(width)
    if name == "dice":
        return Dice(width)
    raise ValueError(f"activation={name!r} must be one of {ACTIVATIONS}")


class MLP(nn.Module):
    """Fully connected stack: ``Linear -> activation [-> dropout]`` per hidden width, then an optional
    output ``Linear`` without activation. Dropout is applied in ``forward`` (training only), so the
    parameters' names do not depend on it: a model trained with dropout loads into one without.

    Input ``(..., in_dim)``; output ``(..., out_dim)`` if ``out_dim`` is given, else
    ``(..., hidden[-1])`` (with the activation applied, as DLRM's bottom MLP has it).

    Args:
        in_dim: input width.
        hidden: hidden widths (may be empty when ``out_dim`` is given: a linear model).
        activation: one of :data:`ACTIVATIONS` (``prelu`` and ``dice`` learn one slope per unit).
        out_dim: width of a final linear layer, e.g. 1 for a logit.
        dropout: dropout probability after each hidden activation.

    Example:
        >>> MLP(8, (16, 4), activation="dice", out_dim=1)(torch.randn(3, 8)).shape
        torch.Size([3, 1])
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        out_dim: Optional[int] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim={in_dim!r} must be an int >= 1")
        widths = check_widths("hidden", hidden, allow_empty=out_dim is not None)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} must be one of {ACTIVATIONS}")
        if out_dim is not None and (isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1):
            raise ValueError(f"out_dim={out_dim!r} must be an int >= 1 or None")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        layers: List[nn.Module] = []
        width = in_dim
        for w in widths:
            layers += [nn.Linear(width, w), make_activation(activation, w)]
            width = w
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.in_dim = in_dim
        self.out_dim = width
        self.dropout = float(dropout)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        if not (self.dropout and self.training):
            return self.net(x)
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i % 2 == 1:  # after each hidden activation (Linear, activation pairs come first)
                x = F.dropout(x, self.dropout, training=True)
        return x


class DotInteraction(nn.Module):
    """DLRM's pairwise dot-product interaction of ``n`` vectors of one dim ``d``.

    Input ``(B, n, d)``; output ``(B, n * (n - 1) / 2)``: the strictly upper triangle of the
    ``n x n`` Gram matrix of each sample, row by row (the DLRM reference's ``interact_features``
    without its self-interaction option).

    Example:
        >>> DotInteraction(4)(torch.randn(2, 4, 8)).shape
        torch.Size([2, 6])
    """

    _flat_index: torch.Tensor  # buffer

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        if num_vectors < 2:
            raise ValueError(f"a dot interaction needs >= 2 vectors, got {num_vectors}")
        self.num_vectors = num_vectors
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("_flat_index", rows * num_vectors + cols, persistent=False)

    @staticmethod
    def output_dim_for(num_vectors: int) -> int:
        """``n * (n - 1) / 2``."""
        return num_vectors * (num_vectors - 1) // 2

    @property
    def output_dim(self) -> int:
        return self.output_dim_for(self.num_vectors)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(B, n, d) -> (B, n(n-1)/2)``."""
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        return gram.flatten(1).index_select(1, self._flat_index)


class CatInteraction(nn.Module):
    """Concatenation "interaction": the vectors side by side, ``[(B, d_1), ...] -> (B, sum d_i)``.

    Example:
        >>> CatInteraction()([torch.ones(2, 3), torch.ones(2, 4)]).shape
        torch.Size([2, 7])
    """

    def forward(self, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(vectors), dim=1)


class CrossInteraction(nn.Module):
    """DCN-v2's cross network (Wang et al., "DCN V2", WWW 2021) over the concatenated vectors, as
    DLRM-DCNv2 (MLPerf's recommendation benchmark) uses it in place of the dot interaction.

    ``x_0 = [v_1, ..., v_n]`` concatenated, ``(B, D)`` with ``D = sum d_i``; then for ``l = 0 .. L-1``::

        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l          (``*``: elementwise)

    and the output is ``x_L``, ``(B, D)``. With ``rank = r`` (``0 < r < D``) each ``W_l`` is the low-rank
    product ``U_l V_l`` (``U_l (D, r)``, ``V_l (r, D)``): ``2 D r`` weights a layer instead of ``D^2``,
    the form of MLPerf's reference (TorchRec's ``LowRankCrossNet``). ``rank`` 0 or None, or ``r >= D``
    (which restricts nothing: every ``D x D`` matrix is such a product), gives the full-rank ``W_l``.
    Initialisation as TorchRec's: weights Xavier-normal, biases zero, so a fresh layer adds
    ``x_0 * (W x_l)`` to the identity. Parameters: ``layers[l]`` is ``nn.Linear(D, D)`` (``W_l``, ``b_l``)
    or ``nn.Sequential(nn.Linear(D, r, bias=False), nn.Linear(r, D))`` (``V_l``, then ``U_l`` and ``b_l``).

    Written here rather than taken from ``torchrec.modules.crossnet``: TorchRec splits the two forms into
    ``CrossNet`` and ``LowRankCrossNet`` (which refuses rank 0), and this module keeps the dense layers
    torch-only, like the rest of this file.

    Args:
        in_dim: ``D``.
        num_layers: ``L >= 1``.
        rank: ``r`` for the low-rank form; 0 or None for full rank.

    Example:
        >>> cross = CrossInteraction(7, num_layers=2, rank=3)
        >>> cross([torch.ones(2, 3), torch.ones(2, 4)]).shape, cross.low_rank
        (torch.Size([2, 7]), True)
    """

    def __init__(self, in_dim: int, num_layers: int = 3, rank: Optional[int] = None) -> None:
        super().__init__()
        for key, value, least in (("in_dim", in_dim, 1), ("num_layers", num_layers, 1), ("rank", rank, 0)):
            if key == "rank" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key}={value!r} must be an int >= {least}"
                                 + (" (0 or None = full rank)" if key == "rank" else ""))
        self.in_dim = in_dim
        self.num_layers = num_layers
        self.rank: Optional[int] = rank if rank else None
        self.low_rank = self.rank is not None and self.rank < in_dim
        layers: List[nn.Module] = []
        for _ in range(num_layers):
            if self.rank is not None and self.low_rank:
                v, u = nn.Linear(in_dim, self.rank, bias=False), nn.Linear(self.rank, in_dim)
                nn.init.xavier_normal_(v.weight)
                nn.init.xavier_normal_(u.weight)
                nn.init.zeros_(u.bias)
                layers.append(nn.Sequential(v, u))
            else:
                w = nn.Linear(in_dim, in_dim)
                nn.init.xavier_normal_(w.weight)
                nn.init.zeros_(w.bias)
                layers.append(w)
        self.layers = nn.ModuleList(layers)

    @property
    def output_dim(self) -> int:
        return self.in_dim

    def forward(self, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(B, d_1), ...]`` with ``sum d_i = D`` -> ``(B, D)``."""
        x0 = torch.cat(list(vectors), dim=1)
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x

    def extra_repr(self) -> str:
        return f"{self.in_dim}, num_layers={self.num_layers}, rank={self.rank if self.low_rank else 'full'}"


def _segment_sum(values: torch.Tensor, lengths: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-bag sums of a jagged ``(N, D)`` tensor with bag ``lengths (B,)`` -> ``(B, D)``."""
    segments = torch.repeat_interleave(torch.arange(batch, device=values.device), lengths.long(),
                                       output_size=values.shape[0])
    out = values.new_zeros(batch, values.shape[1])
    return out.index_add(0, segments, values)


class SumPooling(nn.Module):
    """Plain sum over the valid positions of a history (DIN's attention ablation).

    ``forward(history (B, T, D), candidate (B, D), mask (B, T)) -> (B, D)``; padded positions
    (``mask`` False) are ignored. ``forward_jagged(values (N, D), lengths (B,), candidate (B, D))``
    does the same on the unpadded rows.

    Example:
        >>> h = torch.ones(2, 3, 4)
        >>> SumPooling()(h, torch.zeros(2, 4), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool())[:, 0].tolist()
        [2.0, 1.0]
    """

    def forward(self, history: torch.Tensor, candidate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_jagged(history[mask], mask.sum(1), candidate)

    def forward_jagged(self, values: torch.Tensor, lengths: torch.Tensor, candidate: torch.Tensor,
                       keys: Optional[torch.Tensor] = None, query: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``keys`` and ``query`` (the attention rows of decoupled embeddings) are ignored: no scores here."""
        return _segment_sum(values, lengths, candidate.shape[0])


class AttentionPooling(SumPooling):
    """DIN's local activation unit and weighted sum pooling (Zhou et al., KDD 2018, section 4.3).

    For history rows ``h_t`` and the candidate ``c`` (both ``D`` wide), an MLP over
    ``[h_t, c, h_t - c, h_t * c]`` (``4 D`` wide) gives a scalar weight ``w_t``, and the user's
    interest is ``sum_t w_t h_t``. The weights are NOT normalised (no softmax), as in the paper, so
    the pooled vector keeps how strongly the history relates to the candidate.

    Shapes: ``forward(history (B, T, D), candidate (B, D), mask (B, T) bool) -> (B, D)``; positions
    with ``mask`` False contribute nothing. The unit runs only on the valid positions (never on
    padding), so padding can change neither the weights nor Dice's batch statistics.
    ``forward_jagged(values (N, D), lengths (B,), candidate (B, D))`` takes the unpadded rows
    (``N = sum(lengths)``, grouped by sample), which is what :class:`~recsys_emb.models.din.DIN` uses.
    Decoupled (DARE): ``forward_jagged(values, lengths, candidate, keys (N, dim), query (B, dim))`` scores
    ``keys`` against ``query`` and sums ``values`` (any width) with those weights; ``dim`` is then the
    attention rows' width.

    Args:
        dim: ``D``.
        hidden: hidden widths of the unit's MLP (paper: 80, 40).
        activation: its activation (``dice``, ``prelu`` or ``relu``).

    Example:
        >>> att = AttentionPooling(4, hidden=(8,))
        >>> att(torch.randn(2, 3, 4), torch.randn(2, 4), torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "dice") -> None:
        super().__init__()
        self.dim = dim
        self.unit = MLP(4 * dim, check_widths("attention_mlp", hidden, allow_empty=True), activation, out_dim=1)

    def weights_jagged(self, values: torch.Tensor, lengths: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """Un-normalised weight ``(N,)`` of each valid history row."""
        c = torch.repeat_interleave(candidate, lengths.long(), dim=0, output_size=values.shape[0])
        return self.unit(torch.cat([values, c, values - c, values * c], dim=1)).squeeze(1)

    def forward_jagged(self, values: torch.Tensor, lengths: torch.Tensor, candidate: torch.Tensor,
                       keys: Optional[torch.Tensor] = None, query: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (keys is None) != (query is None):
            raise ValueError("AttentionPooling.forward_jagged takes keys and query together (decoupled) or neither")
        w = self.weights_jagged(values if keys is None else keys, lengths, candidate if query is None else query)
        return _segment_sum(values * w.unsqueeze(1), lengths, candidate.shape[0])


LINEAR_SCALE = 10.0
""":class:`LinearTerm` stores its weights divided by this: Adam's steps do not depend on the gradient's
scale, so each step moves the logit this many times further than a plain parameter would (the dense
learning rate 0.001 acts as 0.01 on the linear term). Measured on 4,000 generated Criteo-like training
rows (docs/training.md, "Small data")."""


class LinearTerm(nn.Module):
    """The first-order ("wide") term of a logistic regression, added to a deep model's logit as in
    Wide & Deep, FM and DeepFM: one weight per id of every feature and a linear map of the dense features.

    For sample ``b``: ``linear_b = sum_f pool_f(w_f[ids of f in bag b]) + dense_b . v``, ``pool_f`` the
    feature's pooling (``"sum"``, or ``"mean"``: the bag's mean, 0 for an empty bag). The weights are
    parameters of this module (dense parameters: the dense optimizer trains them, replicated when the
    tables are sharded), stored as ``w / scale`` (:data:`LINEAR_SCALE`), zero at the start.
    :meth:`penalty` is ``l2 * (||w||^2 + ||v||^2)`` over all weights, a logistic regression's L2 (with
    ``l2 = 1 / (2 C n)`` on ``n`` training rows it is scikit-learn's ``C``).

    Shapes: ``dense (B, dense_in)`` (None when ``dense_in == 0``); ``values[f] (n_f,)`` int64 ids of
    feature ``f`` in ``[0, rows[f])``, ``lengths[f] (B,)`` its bag lengths -> ``(B,)``.

    Args:
        rows: ids per feature (its cardinality), in feature order.
        poolings: ``"sum"`` or ``"mean"`` per feature.
        dense_in: number of dense features (0: none).
        l2: the penalty's strength.
        scale: the weights' storage scale.

    Example:
        >>> term = LinearTerm([3, 2], ["sum", "mean"], dense_in=1)
        >>> term.weights[0].data = torch.tensor([0.1, 0.2, 0.3]) / term.scale
        >>> term.weights[1].data = torch.tensor([1.0, 3.0]) / term.scale
        >>> term.dense.data = torch.tensor([2.0]) / term.scale
        >>> out = term(torch.tensor([[1.0], [0.0]]), [torch.tensor([0, 2, 1]), torch.tensor([0, 1])],
        ...            [torch.tensor([2, 1]), torch.tensor([2, 0])])
        >>> [round(x, 4) for x in out.tolist()]  # [0.1 + 0.3 + (1 + 3) / 2 + 2 * 1, 0.2 + 0 + 0]
        [4.4, 0.2]
    """

    def __init__(self, rows: Sequence[int], poolings: Sequence[str], dense_in: int = 0, l2: float = 0.0,
                 scale: float = LINEAR_SCALE) -> None:
        super().__init__()
        if len(rows) != len(poolings):
            raise ValueError(f"LinearTerm: {len(rows)} row counts for {len(poolings)} poolings")
        for r, p in zip(rows, poolings):
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f"LinearTerm: rows {r!r} must be an int >= 1 (the feature's cardinality)")
            if p not in ("sum", "mean"):
                raise ValueError(f"LinearTerm: pooling {p!r} must be 'sum' or 'mean'")
        if l2 < 0 or scale <= 0:
            raise ValueError(f"LinearTerm: l2={l2!r} must be >= 0 and scale={scale!r} > 0")
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(r)) for r in rows])
        self.dense = nn.Parameter(torch.zeros(dense_in))
        self.mean = [p == "mean" for p in poolings]
        self.l2 = float(l2)
        self.scale = float(scale)

    def forward(self, dense: Optional[torch.Tensor], values: Sequence[torch.Tensor],
                lengths: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = lengths[0].shape[0] if len(lengths) else dense.shape[0]  # type: ignore[union-attr]
        out = torch.zeros(batch, device=self.dense.device, dtype=self.dense.dtype)
        for w, mean, ids, lens in zip(self.weights, self.mean, values, lengths):
            bag = _segment_sum(w[ids].unsqueeze(1), lens, batch).squeeze(1)
            out = out + (bag / lens.clamp(min=1) if mean else bag)
        if self.dense.numel():
            out = out + dense.to(self.dense.dtype) @ self.dense  # type: ignore[union-attr]
        return out * self.scale

    def penalty(self) -> torch.Tensor:
        """``l2 * (||w||^2 + ||v||^2)`` of the weights as they act (a scalar): add it to the loss."""
        total = sum((w * w).sum() for w in self.weights) + (self.dense * self.dense).sum()
        return self.l2 * self.scale ** 2 * total


def dense_autocast(like: torch.Tensor, dtype: Optional[torch.dtype]) -> Any:
    """A context that runs the dense layers under ``torch.autocast`` on ``like``'s device in ``dtype``
    (e.g. ``torch.bfloat16``); a no-op for ``None``. The models open it after the table lookups, so the
    tables and their fused optimizers stay in float32.

    Example:
        >>> x = torch.ones(2, 3)
        >>> with dense_autocast(x, torch.bfloat16):
        ...     (x @ x.T).dtype
        torch.bfloat16
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, dtype=dtype)
