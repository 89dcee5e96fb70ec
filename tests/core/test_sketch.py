"""JL sketches (numpy reference): the hash, the definition, linearity, shards and the error rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sedmon_core.sketch import (
    BLOCK,
    METHODS,
    SketchSpec,
    bit_sign,
    countsketch_block_words,
    countsketch_buckets_signs,
    countsketch_table,
    gaussian_columns,
    mix64,
    parameter_key,
    sketch_array,
    sketch_named,
    splitmix64,
)

MASK = (1 << 64) - 1


def splitmix64_bigint(state: int, count: int) -> list[int]:
    """The published splitmix64 generator on Python integers, outputs as signed int64."""
    out = []
    state &= MASK
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out.append(z - (1 << 64) if z >> 63 else z)
    return out


@pytest.mark.parametrize("state", [0, 1234567, -1, -(2**63), 2**63 - 1])
def test_splitmix64_matches_the_published_generator(state: int) -> None:
    got = splitmix64(state, np.arange(50))
    assert got.tolist() == splitmix64_bigint(state, 50)


def test_mix64_shifts_are_logical_for_negative_words() -> None:
    words = np.array([-1, -(2**63), -12345678901234], dtype=np.int64)
    expected = []
    for w in words.tolist():
        z = w & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        expected.append(z - (1 << 64) if z >> 63 else z)
    assert mix64(words).tolist() == expected


def test_parameter_key_depends_on_seed_and_name_only() -> None:
    assert parameter_key(0, "w") == parameter_key(0, "w")
    assert len({parameter_key(0, "w"), parameter_key(1, "w"), parameter_key(0, "b")}) == 3
    assert -(2**63) <= parameter_key(7, "transformer.h.0.attn.c_attn.weight") < 2**63


@pytest.mark.parametrize(
    ("method", "dim", "seed"),
    [
        ("nope", 10, 0),
        ("countsketch", 0, 0),
        ("countsketch", 65_537, 0),
        ("gaussian", 10, -1),
        ("countsketch", 10, 2**63),
        ("countsketch", 10.0, 0),
        ("countsketch", True, 0),
    ],
)
def test_spec_rejects_bad_fields(method: str, dim: int, seed: int) -> None:
    with pytest.raises(ValueError):
        SketchSpec(method, dim, seed)


def test_spec_methods_and_identity_cap() -> None:
    assert METHODS == ("countsketch", "gaussian", "identity", "external")
    assert SketchSpec("identity", 1_000_000).dim == 1_000_000
    assert SketchSpec() == SketchSpec("countsketch", 300, 0)


def test_countsketch_follows_the_block_definition() -> None:
    spec = SketchSpec("countsketch", 37, 5)
    index = np.array([0, 1, 63, 64, BLOCK - 1, BLOCK, 5 * BLOCK + 17, 10**9 + 3])
    bucket, sign = countsketch_buckets_signs(spec, "w", index)
    table_bucket, table_sign = countsketch_table(spec)
    shift, run_word, lane_word = countsketch_block_words(spec, "w", index // BLOCK)
    j = index % BLOCK
    assert bucket.tolist() == ((shift + table_bucket[j]) % 37).tolist()
    expected = [
        table_sign[jj]
        * (-1.0 if (int(r) >> (jj // 64)) & 1 else 1.0)
        * (-1.0 if (int(ln) >> (jj % 64)) & 1 else 1.0)
        for jj, r, ln in zip(j.tolist(), run_word, lane_word, strict=True)
    ]
    assert sign.tolist() == expected
    key = parameter_key(5, "w")
    c = index // BLOCK
    assert run_word.tolist() == splitmix64(key, 3 * c + 1).tolist()
    assert lane_word.tolist() == splitmix64(key, 3 * c + 2).tolist()
    assert set(np.unique(table_sign)) == {-1.0, 1.0}
    assert table_bucket.min() >= 0 and table_bucket.max() < 37


def test_bit_sign_reads_every_bit_of_negative_words() -> None:
    word = np.array([-(2**63) + 5], dtype=np.int64)  # bits 0, 2 and 63 set
    signs = bit_sign(np.repeat(word, 64), np.arange(64))
    assert np.flatnonzero(signs < 0).tolist() == [0, 2, 63]


def test_offsets_sharing_a_bucket_get_fresh_relative_signs_in_every_block() -> None:
    spec = SketchSpec("countsketch", 7, 11)
    table_bucket, _ = countsketch_table(spec)
    j1, j2 = np.flatnonzero(table_bucket == table_bucket[0])[:2]  # collide in every block
    blocks = np.arange(2000)
    _, s1 = countsketch_buckets_signs(spec, "w", blocks * BLOCK + j1)
    _, s2 = countsketch_buckets_signs(spec, "w", blocks * BLOCK + j2)
    assert abs(np.mean(s1 * s2)) < 0.1  # a fair coin per block: sd 0.022


def _relative_norm_errors(x: np.ndarray, k: int, seeds: int) -> np.ndarray:
    norm2 = float(np.sum(x * x))
    return np.array(
        [
            np.sum(sketch_array(SketchSpec("countsketch", k, s), "w", x) ** 2) / norm2 - 1.0
            for s in range(seeds)
        ]
    )


def test_a_delta_repeating_over_blocks_is_sketched_as_well_as_a_random_one() -> None:
    # a rank-1 update of a (rows x 1024) matrix has the same column profile in every row,
    # so every block of 4096 elements repeats the previous one up to a row scale; a block
    # design with shared signs would add the table's collisions coherently over the 16
    # blocks (sd of the norm error x sqrt(2) of a random vector's)
    rng = np.random.default_rng(5)
    k, seeds = 50, 300
    u, v = rng.normal(size=64), rng.normal(size=1024)
    repeating = (np.abs(u)[:, None] * v[None, :]).reshape(-1)
    random = rng.normal(size=repeating.size)
    rms_repeating = np.sqrt(np.mean(_relative_norm_errors(repeating, k, seeds) ** 2))
    rms_random = np.sqrt(np.mean(_relative_norm_errors(random, k, seeds) ** 2))
    # countsketch's norm error has sd about sqrt(2 / k) = 0.2; each rms is within ~5 %
    assert 0.15 < rms_random < 0.25
    assert rms_repeating / rms_random < 1.2, (rms_repeating, rms_random)


def test_countsketch_buckets_are_uniform_and_signs_balanced() -> None:
    spec = SketchSpec("countsketch", 50, 1)
    bucket, sign = countsketch_buckets_signs(spec, "w", np.arange(200_000))
    counts = np.bincount(bucket, minlength=50)
    assert counts.min() > 3600 and counts.max() < 4400  # 4000 each, +-6 sigma
    assert abs(sign.mean()) < 0.01


def test_sketch_of_a_unit_vector_is_its_signed_bucket() -> None:
    spec = SketchSpec("countsketch", 11, 3)
    x = np.zeros(3 * BLOCK + 5)
    x[2 * BLOCK + 9] = 2.5
    bucket, sign = countsketch_buckets_signs(spec, "p", np.array([2 * BLOCK + 9]))
    expected = np.zeros(11)
    expected[bucket[0]] = 2.5 * sign[0]
    assert np.array_equal(sketch_array(spec, "p", x), expected)


@pytest.mark.parametrize("method", ["countsketch", "gaussian"])
def test_sketch_is_linear(method: str) -> None:
    spec = SketchSpec(method, 64, 2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 9000))
    lhs = sketch_array(spec, "w", 3.0 * x - 0.5 * y)
    rhs = 3.0 * sketch_array(spec, "w", x) - 0.5 * sketch_array(spec, "w", y)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-12 * np.linalg.norm(lhs))


@pytest.mark.parametrize("method", ["countsketch", "gaussian"])
def test_shard_sketches_sum_to_the_whole(method: str) -> None:
    spec = SketchSpec(method, 40, 9)
    x = np.random.default_rng(1).normal(size=(7, 1301)).astype(np.float32)
    flat = x.reshape(-1)
    cuts = [0, 1, 4095, 4097, 5000, 8192, flat.size]
    parts = [sketch_array(spec, "w", flat[a:b], a) for a, b in itertools.pairwise(cuts)]
    whole = sketch_array(spec, "w", x)
    np.testing.assert_allclose(
        np.sum(parts, axis=0), whole, rtol=0, atol=1e-12 * np.abs(whole).max()
    )


def test_different_names_give_different_sketches_of_the_same_values() -> None:
    spec = SketchSpec("countsketch", 30, 0)
    x = np.arange(1.0, 100.0)
    assert not np.allclose(sketch_array(spec, "a", x), sketch_array(spec, "b", x))


def test_sketch_named_sums_parameters_and_identity_concatenates() -> None:
    spec = SketchSpec("countsketch", 16, 4)
    a, b = np.arange(6.0).reshape(2, 3), np.ones(5, dtype=np.float32)
    total = sketch_named(spec, [("a", a), ("b", b)])
    np.testing.assert_allclose(total, sketch_array(spec, "a", a) + sketch_array(spec, "b", b))
    exact = sketch_named(SketchSpec("identity", 11), [("a", a), ("b", b)])
    assert exact.dtype == np.float64
    assert exact.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_external_has_nothing_to_compute() -> None:
    with pytest.raises(ValueError, match="external"):
        sketch_array(SketchSpec("external", 8), "w", np.ones(3))


def test_gaussian_entries_are_standard_normal_over_sqrt_k() -> None:
    k = 9  # odd: the last row uses only the cosine half of its word
    cols = gaussian_columns(SketchSpec("gaussian", k, 0), "w", np.arange(20_000))
    assert cols.shape == (k, 20_000)
    z = cols * np.sqrt(k)
    assert abs(z.mean()) < 0.01
    assert abs(z.var() - 1.0) < 0.02
    assert abs(np.mean(z**4) - 3.0) < 0.1  # Gaussian kurtosis
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.03  # cos and sin halves uncorrelated


@pytest.mark.parametrize("method", ["countsketch", "gaussian"])
def test_squared_norm_is_preserved_on_average(method: str) -> None:
    x = np.random.default_rng(2).normal(size=3000)
    norms = [np.sum(sketch_array(SketchSpec(method, 50, s), "w", x) ** 2) for s in range(60)]
    # relative sd of one estimate is sqrt(2 / k) = 0.2; of the mean of 60, 0.026
    assert abs(np.mean(norms) / np.sum(x**2) - 1.0) < 0.08


def _sketch_columns(spec: SketchSpec, x: np.ndarray) -> np.ndarray:
    """S applied to each column of x (d, p): (k, p), S evaluated once for all columns."""
    index = np.arange(x.shape[0])
    if spec.method == "gaussian":
        return gaussian_columns(spec, "w", index) @ x
    bucket, sign = countsketch_buckets_signs(spec, "w", index)
    out = np.zeros((spec.dim, x.shape[1]))
    np.add.at(out, bucket, sign[:, None] * x)
    return out


@pytest.mark.parametrize(("method", "d"), [("countsketch", 5000), ("gaussian", 1200)])
def test_inner_product_error_shrinks_like_one_over_sqrt_k(method: str, d: int) -> None:
    # per k: several sketches, each applied to many random pairs (x, y), so the rms error
    # averages over both the sketch's randomness and the vectors'
    rng = np.random.default_rng(3)
    sketches, pairs = 6, 64
    ks = np.array([50, 100, 200, 400, 800, 1600])
    rms = []
    for k in ks:
        errors = []
        for t in range(sketches):
            x, y = rng.normal(size=(2, d, pairs))
            spec = SketchSpec(method, int(k), 1000 * int(k) + t)
            sx, sy = _sketch_columns(spec, x), _sketch_columns(spec, y)
            exact = np.sum(x * y, axis=0)
            norms = np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0)
            errors.append((np.sum(sx * sy, axis=0) - exact) / norms)
        rms.append(np.sqrt(np.mean(np.square(errors))))
    slope = np.polyfit(np.log(ks), np.log(rms), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, rms)
