import subprocess
import sys

import numpy as np
import pytest
import torch

from recsys_emb.hashing import (
    GOLDEN64,
    bucket_reference,
    hash64,
    hash64_reference,
    hash_raw_value,
    hash_raw_values,
    hash_to_buckets,
    mix64,
    mix64_reference,
    seed_from_name,
)

MASK = (1 << 64) - 1


def signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def test_mix64_reference_is_splitmix64():
    # Published splitmix64 outputs for seed 1234567 (the generator adds GOLDEN64 before mixing).
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                4593380528125082431, 16408922859458223821]
    assert [mix64_reference((1234567 + GOLDEN64 * (i + 1)) & MASK) for i in range(5)] == expected


def test_golden_values_pin_the_hash():
    # If these change, every hashed table of every saved model silently points at other rows.
    assert [hash64_reference(x, 0) for x in (0, 1, -1, 2**63 - 1, -2**63)] == [
        5197578548964807871, 12035550249420947055, 17896504823353187392,
        11822673043021752671, 4825662605679656087]
    assert [hash64_reference(x, 42) for x in (0, 1, -1, 123456789)] == [
        12870963724712631011, 6332618229526065668, 1565677636401732475, 4360926349022835796]
    assert [bucket_reference(x, 42, 1000) for x in (0, 1, -1, 123456789)] == [505, 834, 237, 898]
    assert seed_from_name("C1") == 8270327145316094462
    assert seed_from_name("C1", "hash", 0) == 3541862682822569776
    assert hash_raw_value("68fd1e64") == -3431668713139567630
    assert hash_raw_value("68fd1e64", 7) == -6934826029156507157


def test_tensor_hash_matches_reference_including_negative_and_extreme_ids():
    gen = torch.Generator().manual_seed(0)
    ids = torch.cat([
        torch.randint(-2**62, 2**62, (500,), generator=gen),
        torch.tensor([0, 1, -1, 2**63 - 1, -2**63, 2**32, -2**32]),
    ])
    for seed in (0, 7, seed_from_name("feature")):
        got = hash64(ids, seed).tolist()
        assert got == [signed(hash64_reference(x, seed)) for x in ids.tolist()]
        buckets = hash_to_buckets(ids, seed, 997).tolist()
        assert buckets == [bucket_reference(x, seed, 997) for x in ids.tolist()]
    assert mix64(ids).tolist() == [signed(mix64_reference(x)) for x in ids.tolist()]


def test_buckets_are_uniform():
    buckets = 256
    n = 256 * 400
    counts = torch.bincount(hash_to_buckets(torch.arange(n), seed=3, buckets=buckets), minlength=buckets).double()
    expected = n / buckets
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 255 degrees of freedom: mean 255, sd ~22.6; 400 is beyond 6 sd.
    assert chi2 < 400, chi2
    # Sequential ids must not land in sequential buckets (that would be no hashing at all).
    b = hash_to_buckets(torch.arange(1000), seed=3, buckets=buckets)
    assert (b[1:] == b[:-1] + 1).float().mean() < 0.05


def test_seeds_decorrelate():
    ids = torch.arange(10_000)
    a = hash_to_buckets(ids, 1, 1000)
    b = hash_to_buckets(ids, 2, 1000)
    assert (a == b).float().mean() < 0.01


def test_errors():
    with pytest.raises(TypeError, match="int64"):
        hash64(torch.tensor([1.0]), 0)
    with pytest.raises(TypeError, match="int64"):
        hash64(torch.tensor([1], dtype=torch.int32), 0)
    with pytest.raises(ValueError, match="buckets"):
        hash_to_buckets(torch.tensor([1]), 0, 0)
    with pytest.raises(TypeError, match="float"):
        hash_raw_value(1.5)


def test_raw_values():
    assert hash_raw_value(5, 3) == hash64(torch.tensor([5]), 3).item()
    assert hash_raw_value("abc") == hash_raw_value(b"abc")
    arr = hash_raw_values(["a", "b", "a", "c"], seed=1)
    assert arr.dtype == np.int64
    assert arr.tolist() == [hash_raw_value(v, 1) for v in ["a", "b", "a", "c"]]
    assert hash_raw_values(np.array([1, 2, 3]), 9).tolist() == [hash_raw_value(v, 9) for v in (1, 2, 3)]


def test_hashes_identical_in_another_process():
    """Python's hash() is salted per process; ours must not be."""
    code = ("import torch;from recsys_emb.hashing import hash_to_buckets, seed_from_name, hash_raw_value;"
            "print(hash_to_buckets(torch.arange(-50, 50), seed_from_name('C7'), 1009).tolist(), "
            "hash_raw_value('68fd1e64', 3))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout for s in (1, 2)}
    assert len(outs) == 1
    here = f"{hash_to_buckets(torch.arange(-50, 50), seed_from_name('C7'), 1009).tolist()} {hash_raw_value('68fd1e64', 3)}\n"
    assert outs.pop() == here


def test_bucket_matrices_equal_bucket_matrix_per_feature():
    from recsys_emb.hashing import bucket_matrices, bucket_matrix, seed_keys

    keys = seed_keys(torch.tensor([[1, 2], [3, 4], [5, 6]]))
    ids = [torch.tensor([0, -1, 2**62, 7]), torch.tensor([], dtype=torch.int64), torch.tensor([-(2**63), 9])]
    buckets = torch.tensor([13, 5, 1000])
    got = bucket_matrices(ids, keys, buckets)
    for f in range(3):
        assert torch.equal(got[f], bucket_matrix(ids[f], keys[f], int(buckets[f])))


def test_bucket_rows_with_per_id_keys_equal_bucket_matrix():
    from recsys_emb.hashing import bucket_matrix, bucket_rows, seed_keys

    keys = seed_keys(torch.tensor([[1, 2], [3, 4]]))
    x = torch.tensor([0, -1, 2**62, -(2**63), 9, 2**63 - 1])
    owner = torch.tensor([0, 0, 1, 1, 0, 1])
    buckets = torch.tensor([13, 1000])
    got = bucket_rows(x, keys[owner], buckets[owner])
    for i in range(len(x)):
        assert torch.equal(got[i:i + 1], bucket_matrix(x[i:i + 1], keys[owner[i]], int(buckets[owner[i]])))
