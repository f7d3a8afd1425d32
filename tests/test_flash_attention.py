"""CPU flash attention over every KV cache format, against a float64 numpy softmax attention.

Tolerance, per format: the kernel's error against float64 attention on the fp32 inputs is at most
2x that of a plain float32 numpy attention over the very values the format stores (for f16, bf16
and q8_0 most of the error is the storage's own rounding, which both share)."""

import numpy as np
import pytest

from llama_local import _core

ISAS = _core.build_info()["isas_supported"]
KV_TYPES = ["f32", "f16", "bf16", "q8_0"]
K = _core.kernels


def reference(q, k, v, p0, dtype):
    """Causal GQA attention in `dtype`: q [T, H, hd] at positions p0.., k/v [p0 + T, KH, hd]."""
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    T, H, hd = q.shape
    g = H // k.shape[1]
    out = np.zeros((T, H, hd), dtype)
    for h in range(H):
        s = q[:, h] @ k[:, h // g].T / dtype(np.sqrt(hd))
        s[np.arange(k.shape[0])[None, :] > (p0 + np.arange(T))[:, None]] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[:, h // g]
    return out


def stored(x, kv):
    n, kh, hd = x.shape
    return K.encode_kv(np.ascontiguousarray(x.reshape(n, kh * hd)), kv)[1].reshape(n, kh, hd)


def case(T, p0, H, KH, hd, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, H, hd)).astype(np.float32)
    k = rng.standard_normal((p0 + T, KH, hd)).astype(np.float32)
    v = rng.standard_normal((p0 + T, KH, hd)).astype(np.float32)
    k[3 % (p0 + T)] *= 4    # one position that draws most of the attention: a sharp softmax too
    return q, k, v


def check(q, k, v, p0, kv, isa, splits=0, n_threads=1):
    exact = reference(q, k, v, p0, np.float64)
    plain = reference(q, stored(k, kv), stored(v, kv), p0, np.float32)
    ours = K.attention(q, k, v, p0=p0, kv_cache=kv, isa=isa, n_threads=n_threads, splits=splits)
    assert ours.shape == q.shape and np.all(np.isfinite(ours))
    err, err_plain = np.abs(ours - exact).max(), np.abs(plain - exact).max()
    assert err <= 2 * err_plain + 1e-6, (err, err_plain)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv", KV_TYPES)
@pytest.mark.parametrize("H, KH", [(4, 4), (8, 4), (8, 2), (8, 1)])   # GQA 1:1 to 8:1
@pytest.mark.parametrize("hd", [64, 128])
def test_prefill(isa, kv, H, KH, hd):
    # 77 new queries after 50 cached positions: query blocks, partial tiles and the causal
    # boundary inside a tile all occur.
    check(*case(77, 50, H, KH, hd), p0=50, kv=kv, isa=isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv", KV_TYPES)
@pytest.mark.parametrize("H, KH", [(4, 4), (8, 1)])
@pytest.mark.parametrize("hd", [64, 128])
@pytest.mark.parametrize("splits", [1, 3, 0])
def test_decode_with_split_ranges(isa, kv, H, KH, hd, splits):
    # One query at position 300: the KV positions cut into ranges merged by log-sum-exp.
    check(*case(1, 300, H, KH, hd, seed=1), p0=300, kv=kv, isa=isa, splits=splits, n_threads=2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv", KV_TYPES)
@pytest.mark.parametrize("T", [2, 3, 5])
def test_few_rows_in_any_count(isa, kv, T):
    # The decode path (at most 16 rows, scores straight from the cached K blocks): 3 query heads
    # per KV head and T tokens make 6, 9 or 15 rows (partial row groups) with T different causal
    # limits; position 37 and the split point start and end ranges inside a K block of 16.
    check(*case(T, 37, 6, 2, 64, seed=6), p0=37, kv=kv, isa=isa, splits=2, n_threads=2)


@pytest.mark.parametrize("kv", KV_TYPES)
def test_a_split_may_hold_a_single_position(kv):
    # As many ranges as positions (19): each holds one, several rows see none of some ranges.
    q, k, v = case(3, 16, 8, 2, 64, seed=2)
    check(q, k, v, p0=16, kv=kv, isa=ISAS[-1], splits=19, n_threads=2)


def test_threads_and_isas_agree_on_odd_head_dims():
    # head_dim 40 (not a multiple of any vector width, f16/bf16/f32 only) on every ISA.
    q, k, v = case(33, 7, 6, 3, 40, seed=3)
    for isa in ISAS:
        for kv in ("f32", "f16", "bf16"):
            check(q, k, v, p0=7, kv=kv, isa=isa, n_threads=2)


def test_first_position_only():
    q, k, v = case(1, 0, 4, 2, 64, seed=4)
    out = K.attention(q, k, v, p0=0, kv_cache="f32")
    np.testing.assert_allclose(out, np.repeat(v, 2, axis=1), rtol=0, atol=1e-6)   # softmax of one score is 1


def test_encodings_round_trip():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 64)).astype(np.float32) * 10
    x[0, :32] = 0.0                                   # a q8_0 block of zeros: scale 0, codes 0
    raw, back = K.encode_kv(x, "f16")
    np.testing.assert_array_equal(raw.view(np.float16).astype(np.float32), back)
    np.testing.assert_array_equal(back, x.astype(np.float16).astype(np.float32))
    import ml_dtypes
    _, back = K.encode_kv(x, "bf16")
    np.testing.assert_array_equal(back, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    raw, back = K.encode_kv(x, "q8_0")
    assert raw.shape == (3, 64 + 2 * 2)              # 34 bytes per 32 values
    codes = raw[:, :64].view(np.int8).astype(np.float32)
    scales = raw[:, 64:].copy().view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(back, codes * np.repeat(scales, 32, axis=1))
    blocks = x.reshape(3, 2, 32)
    d = np.abs(blocks).max(axis=2) / 127
    np.testing.assert_array_equal(scales, d.astype(np.float16).astype(np.float32))
    assert np.all(np.abs(back - x) <= np.repeat(d, 32, axis=1) * 0.5 * 1.01 + 1e-3 * np.abs(x))
    assert np.all(back[0, :32] == 0)


def test_bad_arguments():
    q, k, v = case(2, 1, 4, 2, 64)
    with pytest.raises(ValueError, match="unknown KV cache type 'int3'"):
        K.attention(q, k, v, p0=1, kv_cache="int3")
    with pytest.raises(ValueError, match="p0 \\+ T rows"):
        K.attention(q, k, v, p0=0)
    with pytest.raises(ValueError, match="q8_0"):
        K.attention(*case(1, 0, 2, 1, 40), p0=0, kv_cache="q8_0")
