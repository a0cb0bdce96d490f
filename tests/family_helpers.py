"""Checks every embedding family passes against a materialised reference (tests/embeddings/test_*.py).

A family's test gives ``reference(layer) -> (leaves, table)``: the layer's trainable tensors as fresh
leaves (named like the layer's parameters) and the ``(cardinality, dim)`` table computed from them by
code of the test's own. The layer's pooled forward and every parameter's gradient must equal what plain
autograd gives on ``table[ids]`` summed per bag."""

import copy
from typing import Callable, Dict, Optional, Tuple

import torch

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_module, memory_from_specs
from recsys_emb.specs import FeatureSpec, Full

BAGS = {"x": [[1], [2, 49, 2], [], [7, 0]], "y": [[0, 8], [], [3], [1]], "z": [[1], [], [30], [49, 3]]}
Reference = Callable[[EmbeddingLayer], Tuple[Dict[str, torch.Tensor], torch.Tensor]]


def layer_for(spec, seed: int = 0) -> EmbeddingLayer:
    """Feature ``x`` (50 ids) with ``spec``, a mean-pooled full ``y`` and ``z`` sharing ``x``'s tables."""
    torch.manual_seed(seed)
    return EmbeddingLayer([FeatureSpec("x", spec, cardinality=50),
                           FeatureSpec("y", Full(dim=4), cardinality=9, pooling="mean"),
                           FeatureSpec("z", spec, cardinality=50, shared_with="x")])


def check_forward_and_gradients(spec, reference: Reference) -> None:
    layer = layer_for(spec)
    leaves, table = reference(layer)
    out = layer(kjt_from_lists(BAGS)).values()
    dim = spec.output_dim
    y = layer.ebc.embedding_bags["y"].weight.detach()
    want = []
    for b in range(4):
        x_row = sum((table[i] for i in BAGS["x"][b]), torch.zeros(dim))
        z_row = sum((table[i] for i in BAGS["z"][b]), torch.zeros(dim))
        y_row = y[BAGS["y"][b]].mean(0) if BAGS["y"][b] else torch.zeros(4)
        want.append(torch.cat([x_row, y_row, z_row]))
    expected = torch.stack(want)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(out, generator=None)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    params = dict(layer.named_parameters())
    for name, leaf in leaves.items():
        assert params[name].grad is not None, name
        torch.testing.assert_close(params[name].grad, leaf.grad, rtol=1e-5, atol=1e-6, msg=name)


def check_sequence_rows(spec, reference: Reference) -> None:
    """Unpooled lookups give each id its materialised row."""
    torch.manual_seed(0)
    layer = SequenceEmbeddingLayer([FeatureSpec("x", spec, cardinality=50, pooling="none")])
    pooled = EmbeddingLayer([FeatureSpec("x", spec, cardinality=50), FeatureSpec("y", Full(4), cardinality=9)])
    pooled.load_state_dict({k: v for k, v in _pooled_state(layer).items()}, strict=False)
    _, table = reference(pooled)
    ids = [3, 49, 0, 3]
    got = layer(kjt_from_lists({"x": [ids[:1], ids[1:]]}))["x"].values()
    torch.testing.assert_close(got, table[ids].detach(), rtol=1e-5, atol=1e-6)


def _pooled_state(seq: SequenceEmbeddingLayer) -> Dict[str, torch.Tensor]:
    """A sequence layer's state under a pooled layer's names (``ecs.d*.embeddings`` -> ``ebc.embedding_bags``)."""
    out = {}
    for k, v in seq.state_dict().items():
        if k.startswith("ecs."):
            k = "ebc.embedding_bags." + k.split(".embeddings.", 1)[1]
        out[k] = v
    return out


def check_bytes(spec) -> None:
    """Memory from the specs = memory read from the built layer = the layer's parameter bytes."""
    layer = layer_for(spec)
    specs = layer.features
    params = sum(p.numel() * p.element_size() for p in layer.parameters())
    assert memory_from_specs(specs).bytes == memory_from_module(layer).bytes == params


def check_state_dict_round_trip(spec) -> None:
    a, b = layer_for(spec, seed=0), layer_for(spec, seed=1)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    kjt = kjt_from_lists(BAGS)
    assert not torch.allclose(a(kjt).values(), b(kjt).values())
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    torch.testing.assert_close(b(kjt).values(), a(kjt).values())


def check_oov_reads_its_own_parameters(spec, own: Callable[[EmbeddingLayer], Dict[str, Optional[torch.Tensor]]]) -> None:
    """``spec.oov_id`` (an id of ``x``) reads parameters no other id reads. ``own(layer)``: ``{parameter name:
    bool mask of its OOV entries}`` of every parameter of ``x``'s (None: read by every id, e.g. a projection).
    Its pooled row is those entries; a batch of only the OOV id sends gradient to them alone, a batch of
    every other id none to them; changing them moves the OOV id's output and no other id's."""
    layer = layer_for(spec)
    oov = spec.oov_id
    params = dict(layer.named_parameters())
    masks = own(layer)
    others = [i for i in range(50) if i != oov]
    for bags, only_oov in (({"x": [[oov], [oov, oov]], "y": [[0], []], "z": [[], [oov]]}, True),
                           ({"x": [others[:25], others[25:]], "y": [[0], []], "z": [others[::2], [7]]}, False)):
        layer.zero_grad()
        layer(kjt_from_lists(bags)).values().pow(2).sum().backward()
        for name, mask in masks.items():
            g = params[name].grad
            if mask is None:
                continue
            if bool(mask.any()):
                assert bool((g[mask] != 0).any()) == only_oov, name  # its own entries learn from it alone
            if only_oov:
                assert bool((g[~mask] == 0).all()), name  # nothing else learns from it
    before = layer(kjt_from_lists({"x": [[oov], others], "y": [[0], [1]], "z": [[], []]})).values().detach()
    with torch.no_grad():
        for name, mask in masks.items():
            if mask is not None:
                params[name][mask] += 1.0
    after = layer(kjt_from_lists({"x": [[oov], others], "y": [[0], [1]], "z": [[], []]})).values().detach()
    dim = spec.output_dim
    assert not torch.allclose(after[0, :dim], before[0, :dim])   # the OOV id reads them
    torch.testing.assert_close(after[1], before[1])                # no other id does
