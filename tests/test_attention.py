"""Embedding and causal self-attention kernels (the GPT issue's first kernels): against the
vectorized twin, PyTorch (``F.embedding``, ``F.scaled_dot_product_attention``; layouts
converted) and centered finite differences."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec

#: (n_head, d_head, T, m): T = 1, odd T, d_head = 1, one head and several
ATT_SHAPES = [(1, 1, 1, 1), (1, 4, 5, 2), (3, 2, 7, 3), (2, 1, 4, 1), (4, 3, 9, 2)]


def heads(rng, shape, dtype):
    return [rand(rng, shape, dtype) for _ in range(4)]  # Q, K, V, dO


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ATT_SHAPES)
def test_attention_matches_vectorized_twin(rng, shape, dtype, causal):
    Q, K, V, dO = heads(rng, shape, dtype)
    O, P = lp.attention_forward(Q, K, V, causal)
    Or, Pr = vec.attention_forward(Q, K, V, causal)
    rtol = RTOL[np.dtype(dtype)]
    assert_close("O", O, Or, rtol)
    assert_close("P", P, Pr, rtol)
    if causal:  # the mask: no query sees a later key
        T = shape[2]
        assert (P[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1], :] == 0).all()
    for name, mine, ref in zip(("dQ", "dK", "dV"), lp.attention_backward(dO, Q, K, V, P),
                               vec.attention_backward(dO, Q, K, V, Pr)):
        assert_close(name, mine, ref, rtol)


@pytest.mark.parametrize("shape", ATT_SHAPES)
def test_attention_matches_torch(rng, shape):
    torch = torch_or_skip()
    Q, K, V, dO = heads(rng, shape, np.float64)

    def to_t(A):  # (h, e, t, k) -> (k, h, t, e)
        return torch.tensor(np.ascontiguousarray(A.transpose(3, 0, 2, 1)), requires_grad=True)

    tQ, tK, tV = to_t(Q), to_t(K), to_t(V)
    out = torch.nn.functional.scaled_dot_product_attention(tQ, tK, tV, is_causal=True)
    out.backward(torch.tensor(np.ascontiguousarray(dO.transpose(3, 0, 2, 1))))
    O, P = lp.attention_forward(Q, K, V)
    assert_close("O", O, out.detach().numpy().transpose(1, 3, 2, 0), 1e-10)
    for name, mine, ref in zip(("dQ", "dK", "dV"), lp.attention_backward(dO, Q, K, V, P),
                               (tQ.grad, tK.grad, tV.grad)):
        assert_close(name, mine, ref.numpy().transpose(1, 3, 2, 0), 1e-10)


def test_attention_gradients_match_finite_differences(rng):
    Q, K, V, G = heads(rng, (2, 3, 4, 2), np.float64)

    def loss():
        return float((lp.attention_forward(Q, K, V)[0] * G).sum())

    P = lp.attention_forward(Q, K, V)[1]
    for name, mine, arr in zip(("dQ", "dK", "dV"), lp.attention_backward(G, Q, K, V, P),
                               (Q, K, V)):
        assert_close(name, mine, numeric_grad(loss, arr), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_twin_and_torch(rng, dtype):
    E = rand(rng, (5, 11), dtype)
    ids = rng.integers(0, 11, (7, 3))
    ids[0, 0] = ids[1, 2] = ids[4, 1] = 3  # repeated tokens add in the backward pass
    X = lp.embedding_forward(E, ids)
    assert_close("X", X, vec.embedding_forward(E, ids), RTOL[np.dtype(dtype)])
    dX = rand(rng, X.shape, dtype)
    dE = lp.embedding_backward(dX, ids, 11)
    assert_close("dE", dE, vec.embedding_backward(dX, ids, 11), RTOL[np.dtype(dtype)])
    assert_close("dE[:, 3]", dE[:, 3], dX[:, 0, 0] + dX[:, 1, 2] + dX[:, 4, 1]
                 + sum(dX[:, t, k] for t in range(7) for k in range(3)
                       if ids[t, k] == 3 and (t, k) not in ((0, 0), (1, 2), (4, 1))), 1e-6)
    if dtype == np.float64:
        torch = torch_or_skip()
        tE = torch.tensor(E.T.copy(), requires_grad=True)  # torch: one row per token
        out = torch.nn.functional.embedding(torch.tensor(ids.T.copy()), tE)  # (m, T, d)
        out.backward(torch.tensor(dX.transpose(2, 1, 0).copy()))
        assert_close("X vs torch", X, out.detach().numpy().transpose(2, 1, 0), 1e-12)
        assert_close("dE vs torch", dE, tE.grad.numpy().T, 1e-12)


def test_bad_input_is_a_clear_error(rng):
    E = rand(rng, (4, 6))
    with pytest.raises(TypeError, match="integer token ids"):
        lp.embedding_forward(E, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"token id 6 is outside the vocabulary \[0, 6\)"):
        lp.embedding_forward(E, np.array([[0, 6]]))
    with pytest.raises(ValueError, match=r"token id -1"):
        lp.embedding_forward(E, np.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"ids: expected shape \(T, m\)"):
        lp.embedding_forward(E, np.array([1, 2]))
    Q, K, V, dO = heads(rng, (2, 3, 4, 2), np.float64)
    with pytest.raises(ValueError, match="K"):
        lp.attention_forward(Q, K[:, :, :3], V)
    with pytest.raises(TypeError, match="causal"):
        lp.attention_forward(Q, K, V, causal=1)
    with pytest.raises(ValueError, match="P"):
        lp.attention_backward(dO, Q, K, V, np.zeros((2, 4, 3, 2)))
    bad = Q.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="Q: contains NaN"):
        lp.attention_forward(bad, K, V)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", ATT_SHAPES + [(2, 3, 33, 5)])
def test_tuned_attention_matches_the_naive_loops(rng, shape, causal):
    """The tuned kernels (matrix products per head, examples in contiguous blocks) against the
    formula's loops, float64."""
    Q, K, V, dO = heads(rng, shape, np.float64)
    O, P = lp.attention_forward(Q, K, V, causal, impl="naive")
    Ot, Pt = lp.attention_forward(Q, K, V, causal, impl="tuned")
    assert_close("O", Ot, O, 1e-12)
    assert_close("P", Pt, P, 1e-12)
    for name, tuned, naive in zip(("dQ", "dK", "dV"),
                                  lp.attention_backward(dO, Q, K, V, P, impl="tuned"),
                                  lp.attention_backward(dO, Q, K, V, P, impl="naive")):
        assert_close(name, tuned, naive, 1e-12)


#: (n_head, d_head, T, m) with m a whole number of registers in float32 (16) and float64 (8):
#: T = 1, odd T past a tile of 4, d_head = 1, one head and several, two groups of lanes
LANE_SHAPES = [(1, 1, 1, 16), (2, 3, 7, 16), (3, 5, 9, 32), (1, 1, 4, 16), (1, 4, 33, 16)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", LANE_SHAPES)
def test_lanes_attention_matches_the_naive_loops(rng, shape, dtype, causal, threads):
    """The kernels with the examples in the lanes (every number a register of examples, read in
    place from the batch layout) against the formula's loops in float64, each output filled
    with NaN first so that an entry left unwritten fails; added gradients add."""
    from loopprop._jit import runtime_flag
    from loopprop.kernels import attention as A
    from loopprop.kernels import attention_lanes as AL

    Q, K, V, dO = (rng.standard_normal(shape) for _ in range(4))
    O, P = lp.attention_forward(Q, K, V, causal, impl="naive")
    grads = lp.attention_backward(dO, Q, K, V, P, impl="naive")
    q, k, v, do, p = (a.astype(dtype) for a in (Q, K, V, dO, P))
    assert A._use_lanes(q)
    Ol, Pl = np.full(Q.shape, np.nan, dtype), np.full(P.shape, np.nan, dtype)
    AL._attention_forward_lanes(Ol, Pl, q, k, v, runtime_flag(causal), threads)
    rtol = RTOL[np.dtype(dtype)] / 100  # float64 1e-12, float32 2e-6
    assert_close("O", Ol, O, rtol)
    assert_close("P", Pl, P, rtol)
    if causal:
        assert (Pl[:, np.triu_indices(shape[2], 1)[0], np.triu_indices(shape[2], 1)[1]] == 0).all()
    out = [np.full(Q.shape, np.nan, dtype) for _ in range(3)]
    AL._attention_backward_lanes(*out, do, q, k, v, p, runtime_flag(causal), runtime_flag(False),
                                threads)
    for name, mine, ref in zip(("dQ", "dK", "dV"), out, grads):
        assert_close(name, mine, ref, rtol)
    AL._attention_backward_lanes(*out, do, q, k, v, p, runtime_flag(causal), runtime_flag(True),
                                threads)
    for name, mine, ref in zip(("dQ", "dK", "dV"), out, grads):
        assert_close(name + " added", mine, 2 * ref, rtol)


def test_tuned_attention_takes_the_lanes_kernels_when_m_fills_registers(rng):
    """The dispatch: whole registers of examples and ``T·d_head`` up to ``LANES_MAX_TD`` take
    the lanes kernels, everything else the per-example blocks -- both equal the naive loops
    through the public function."""
    from loopprop.kernels import attention as A

    for shape, lanes in [((2, 3, 7, 8), True), ((2, 3, 7, 12), False), ((1, 2, 5, 4), False),
                         ((1, A.LANES_MAX_TD // 64 + 1, 64, 8), False)]:
        Q, K, V, dO = heads(rng, shape, np.float64)
        assert A._use_lanes(Q) == lanes, shape
        O, P = lp.attention_forward(Q, K, V, impl="naive")
        Ot, Pt = lp.attention_forward(Q, K, V)
        assert_close("O", Ot, O, 1e-12)
        assert_close("P", Pt, P, 1e-12)
        for name, tuned, naive in zip(("dQ", "dK", "dV"), lp.attention_backward(dO, Q, K, V, P),
                                      lp.attention_backward(dO, Q, K, V, P, impl="naive")):
            assert_close(name, tuned, naive, 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 8, 16, 32, 33])
def test_batch_transposes_match_numpy(rng, dtype, m):
    """The copies between the batch layout ``(rows, m)`` and one block per example ``(m,
    rows)`` -- blocks of a register's lanes transposed in registers when ``m`` is a power of
    two up to 32, the rest one number at a time -- against NumPy's transpose; the causal
    variants read and write only ``s ≤ t`` and zero the rest of each row they promise."""
    from loopprop.kernels import attention_items as AI

    rows = 16 * 5 + 7  # whole blocks of 8 and 16 lanes, and a tail
    src = rng.standard_normal((rows, m)).astype(dtype)
    dst = np.full((m, rows), np.nan, dtype)
    AI._to_items(dst, src)
    np.testing.assert_array_equal(dst, src.T)
    back = np.full((rows, m), np.nan, dtype)
    AI._from_items(back, dst, False)
    np.testing.assert_array_equal(back, src)
    AI._from_items(back, dst, True)
    np.testing.assert_array_equal(back, 2 * src)

    T = 37  # rows of up to 37 keys: whole blocks and tails
    P = rng.standard_normal((T, T, m)).astype(dtype) * np.tril(np.ones((T, T), dtype))[:, :, None]
    items = np.full((m, T * T), np.nan, dtype)
    AI._to_items_causal(items, P.reshape(T * T, m), T)
    NR = 128 // np.dtype(dtype).itemsize
    for t in range(T):
        end = min(T, (t // NR + 1) * NR)
        np.testing.assert_array_equal(items[:, t * T:t * T + end], P[t, :end].T)
    out = np.full((T * T, m), np.nan, dtype)
    AI._from_items_causal(out, items, T)
    np.testing.assert_array_equal(out.reshape(T, T, m), P)


def test_tuned_embedding_matches_the_naive_loops(rng):
    E = rand(rng, (5, 9), np.float64)
    ids = rng.integers(0, 9, (7, 4))
    assert np.array_equal(lp.embedding_forward(E, ids), lp.embedding_forward(E, ids, impl="naive"))
    dX = rand(rng, (5, 7, 4), np.float64)
    assert_close("dE", lp.embedding_backward(dX, ids, 9),
                 lp.embedding_backward(dX, ids, 9, impl="naive"), 1e-15)


@pytest.mark.parametrize("causal", [True, False, None])
def test_backward_told_or_not_whether_the_attention_was_causal(rng, causal):
    """``attention_backward(causal=)``: told True it skips the keys after each query, told
    False it sums over every key (P's zeros add nothing), ``None`` reads P; all equal the
    naive loops."""
    Q, K, V, dO = heads(rng, (2, 3, 37, 3), np.float64)
    _, P = lp.attention_forward(Q, K, V, True)
    naive = lp.attention_backward(dO, Q, K, V, P, impl="naive")
    for name, tuned, ref in zip(("dQ", "dK", "dV"),
                                lp.attention_backward(dO, Q, K, V, P, causal=causal), naive):
        assert_close(name, tuned, ref, 1e-12)
    with pytest.raises(TypeError, match="causal: expected True, False or None"):
        lp.attention_backward(dO, Q, K, V, P, causal=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_register_exp_gives_the_scalar_exps_bits(dtype):
    """The softmax's exponential a register at a time (``simd.vexp``, written as LLVM
    instructions) against the scalar functions it transcribes (``_exp_f32``, ``_exp``),
    compiled as the softmax compiles them: the same bits everywhere -- whole range, both
    clamps, subnormal results, ±inf, NaN -- so ``_exp_f32``'s accuracy test covers both."""
    import numba

    from loopprop._jit import CONTRACT
    from loopprop.kernels.exp import _exp, _exp_f32
    from loopprop.kernels.simd import vexp, vload, vstore

    scalar = _exp_f32 if dtype == np.float32 else _exp

    def one_by_one(out, x):
        for i in range(x.size):
            out[i] = scalar(x[i])

    def registers(out, x):
        L = 64 // x.itemsize
        for i in range(0, x.size, L):
            vstore(out, i, vexp(vload(x, i)))

    one_by_one = numba.njit(fastmath=set(CONTRACT))(one_by_one)
    registers = numba.njit(fastmath=set(CONTRACT))(registers)
    n = 2_048 if numba.config.DISABLE_JIT else 1 << 20
    lo, hi = (-110, 95) if dtype == np.float32 else (-750, 712)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(lo, hi, n), rng.uniform(-1, 1, n // 4),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, hi, lo, 1.0, -1.0, 0.5, 1e-30,
                         -1e-30, 88.72, -87.33, 709.78, -745.1]]).astype(dtype)
    x = np.concatenate([x, np.zeros(-x.size % 16, dtype)])
    want, got = np.empty_like(x), np.empty_like(x)
    one_by_one(want, x)
    registers(got, x)
    np.testing.assert_array_equal(got.view(f"i{x.itemsize}"), want.view(f"i{x.itemsize}"))


def test_float32_exp_is_within_a_few_hundredths_of_an_ulp_over_one():
    """Attention's float32 softmax computes e^x in float32 arithmetic
    (``exp._exp_f32``), compiled as the softmax is, without reassociation. Against the
    exact value (float64 exp) it must stay within 1.05 ulp of the float32 result over the whole
    range of normal results, including the arguments where |n| is largest (a reassociated
    reduction was 4.5 ulp off there); subnormal results within one subnormal step; overflow to
    inf, -inf to 0, NaN stays NaN."""
    import numba

    from loopprop._jit import CONTRACT
    from loopprop.kernels.exp import _exp_f32

    def apply(out, x):
        for i in range(x.size):
            out[i] = _exp_f32(x[i])

    apply = numba.njit(fastmath=set(CONTRACT))(apply)
    n = 20_000 if numba.config.DISABLE_JIT else 4_000_000
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-87.3, 88.7, n), rng.uniform(-1, 1, n // 4),
                        rng.uniform(-103.9, -87.4, n // 4)]).astype(np.float32)
    out = np.empty_like(x)
    apply(out, x)
    exact = np.exp(x.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    ulps = np.abs(out[normal] - exact[normal]) / np.spacing(exact[normal].astype(np.float32))
    assert ulps.max() <= 1.05, f"{ulps.max():.3f} ulp at x = {x[normal][ulps.argmax()]}"
    step = np.float64(np.finfo(np.float32).smallest_subnormal)
    assert np.abs(out[~normal] - exact[~normal]).max() <= step
    special = np.float32([89.0, 1000.0, np.inf, -np.inf, -1000.0, np.nan, 0.0])
    got = np.empty_like(special)
    apply(got, special)
    assert np.isinf(got[:3]).all() and (got[3:5] == 0).all() and np.isnan(got[5]) and got[6] == 1
