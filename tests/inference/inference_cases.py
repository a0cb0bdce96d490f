"""Tiny DLRM and DIN models holding every embedding variant at once (each feature a different variant), with
randomised dense parameters and running statistics, and a batch for each: what the inference tests export."""

from typing import Dict, List, Tuple

import torch

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.models import DIN, DLRM
from recsys_emb.models.din import attention_specs
from recsys_emb.specs import (FeatureSpec, Full, Hashed, LowRank, MixedDimension, QuotientRemainder, Robe, RobeArray,
                              TensorTrain, Unified, UnifiedTable)

CARD = 30
TABLE = UnifiedTable("u", rows=41, chunk_dim=4, reserved=1)
OOV = CARD - 1  # the OOV id of "hashed", "multi_hash", "unified_1", "robe" and "tt": a row of its own


def variant_specs(prefix: str = "", pooling: str = "sum") -> List[FeatureSpec]:
    """One feature per variant (ids < CARD): full, hashed, multi_hash (sum and weighted), qr (mult, concat),
    mixed (block and field forms), unified (two features, 2 and 1 chunks, one table), low-rank, ROBE,
    tensor-train; some with an OOV row."""
    embs = {
        "full": Full(dim=8),
        "hashed": Hashed(dim=8, buckets=11, oov_id=OOV),
        "multi_hash": Hashed(dim=8, buckets=13, num_hashes=2, oov_id=OOV),
        "multi_hash_w": Hashed(dim=8, buckets=13, num_hashes=3, combiner="weighted"),
        "qr": QuotientRemainder(dim=8, collisions=4, op="mult"),
        "qr_concat": QuotientRemainder(dim=8, collisions=4, op="concat"),
        "mixed": MixedDimension(base_dim=8, alpha=0.5, boundaries=(4, 12), block_dims=(8, 4, 4)),
        "mixed_field": MixedDimension(base_dim=8, alpha=0.5, boundaries=(), block_dims=(4,)),
        "unified": Unified(TABLE, chunks=2),
        "unified_1": Unified(TABLE, chunks=1, oov_id=OOV, oov_row=TABLE.rows),
        "lowrank": LowRank(dim=8, rank=4),
        "robe": Robe(RobeArray("robe_array", size=64, reserved=2), dim=8, block=8, oov_id=OOV, oov_row=16),
        "tt": TensorTrain(dim=8, ranks=(2, 3), oov_id=OOV),
    }
    return [FeatureSpec(prefix + name, emb, cardinality=CARD, pooling=pooling) for name, emb in embs.items()]


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial dense parameters and Dice statistics (fresh ones are ones and zeros), in eval mode."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding" not in name and "ebc" not in name and "ecs" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def bags(names: List[str], batch: int, seed: int, one: Tuple[str, ...] = (), same: Tuple[str, ...] = ()
         ) -> Dict[str, List[List[int]]]:
    """Random bags of ids < CARD (0 to 3 per bag, one for the names in ``one``; the names in ``same`` share
    their first name's lengths)."""
    g = torch.Generator().manual_seed(seed)
    out: Dict[str, List[List[int]]] = {}
    sizes = torch.randint(0, 4, (batch,), generator=g).tolist()
    for n in names:
        k = [1] * batch if n in one else (sizes if n in same else torch.randint(0, 4, (batch,), generator=g).tolist())
        out[n] = [torch.randint(0, CARD, (j,), generator=g).tolist() for j in k]
    return out


def dlrm_case(batch: int = 7, interaction: str = "dot", linear: bool = False):
    """A DLRM over every variant (one mean-pooled), with dense features; ``(model, specs, dense, kjt)``.
    ``interaction="dcn"``: DLRM-DCNv2 (two low-rank cross layers); ``linear``: with the first-order term."""
    specs = variant_specs()
    specs.append(FeatureSpec("mean_full", Full(dim=8), cardinality=CARD, pooling="mean"))
    torch.manual_seed(0)
    model = randomise(DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(8,), top_mlp=(8,), interaction=interaction,
                           cross_layers=2, cross_rank=4, linear=linear))
    kjt = kjt_from_lists(bags([s.name for s in specs], batch, seed=2))
    return model, specs, torch.randn(batch, 3, generator=torch.Generator().manual_seed(3)), kjt


def din_case(batch: int = 7, decoupled: bool = False):
    """A DIN without dense features: one (candidate, history) pair per variant (QR's concat and a second unified
    feature left to the DLRM: the same sequence code), two profile features (the DLRM covers the pooled path);
    ``decoupled``: with attention twins of every sequence feature (DARE); ``(model, specs, dense (B, 0), kjt)``."""
    cands = [s for s in variant_specs("item_", pooling="none") if s.name not in ("item_qr_concat", "item_unified_1")]
    hists = [FeatureSpec("hist_" + c.name[5:], c.embedding, cardinality=CARD, pooling="none", shared_with=c.name)
             for c in cands]
    seq = [s for pair in zip(cands, hists) for s in pair]
    profile = [s for s in variant_specs("user_") if s.name in ("user_full", "user_mixed")]
    torch.manual_seed(0)
    twins = SequenceEmbeddingLayer(attention_specs(seq)) if decoupled else None
    model = randomise(DIN(SequenceEmbeddingLayer(seq), [(c.name, h.name) for c, h in zip(cands, hists)],
                          profile=EmbeddingLayer(profile), attention_mlp=(8,), mlp=(8,), attention=twins))
    specs = profile + seq
    kjt = kjt_from_lists(bags([s.name for s in specs], batch, seed=4, one=tuple(c.name for c in cands),
                              same=tuple(h.name for h in hists)))
    return model, specs, torch.zeros(batch, 0), kjt
