"""One small feature set per embedding variant, shared by tests that run every variant through another
path (the 2-process sharding worker, the concatenated-table kernel)."""

from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, Unified, UnifiedTable

SHARED = UnifiedTable("shared", rows=40, chunk_dim=8, reserved=1)


def small_variants():
    """``{variant: [FeatureSpec, ...]}``: feature ``x`` (ids < 50) in each variant; unified adds ``z``.
    Id 49 has a row of its own in ``hashed`` and in unified's ``z`` (the OOV row)."""
    return {
        "full": [FeatureSpec("x", Full(dim=16), cardinality=50)],
        "hashed": [FeatureSpec("x", Hashed(dim=16, buckets=23, oov_id=49))],
        "multi_hash": [FeatureSpec("x", Hashed(dim=16, buckets=23, num_hashes=2, combiner="weighted"))],
        "qr": [FeatureSpec("x", QuotientRemainder(dim=16, collisions=4), cardinality=50)],
        "mixed": [FeatureSpec("x", MixedDimension(16, 0.5, boundaries=(5, 20), block_dims=(16, 8, 8)),
                              cardinality=50)],
        "unified": [FeatureSpec("x", Unified(SHARED, chunks=2)), FeatureSpec("z", Unified(SHARED, oov_id=49, oov_row=SHARED.rows))],
    }


MODEL_TABLE = UnifiedTable("u", rows=64, chunk_dim=4)


def model_variants(unified_chunks: int):
    """``{variant: embedding spec}`` at dim 8 for the model tests (DLRM, DIN), ids < 30."""
    return {
        "full": Full(dim=8),
        "multi_hash": Hashed(dim=8, buckets=13, num_hashes=2),
        "qr": QuotientRemainder(dim=8, collisions=4),
        "mixed": MixedDimension(base_dim=8, alpha=0.5, boundaries=(4, 12), block_dims=(8, 4, 4)),
        "unified": Unified(MODEL_TABLE, chunks=unified_chunks),
    }
