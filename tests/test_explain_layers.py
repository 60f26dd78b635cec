"""``explain`` for a parameter of every layer kind (issue 14): the printed total equals
``backward`` and centered finite differences, and every printed term is one this file
recomputes from the network's own forward values and output gradient, with its own formula
(attention's gradient through the softmax: with torch autograd)."""

import math

import numpy as np
import pytest
from helpers import torch_or_skip

import loopprop as lp
from loopprop.explain_param import explain_param
from loopprop.layers import (AvgPool2d, BatchNorm, CausalSelfAttention, Conv2d, Dense,
                             Embedding, Flatten, LayerNorm, PositionEmbedding, Residual, Softmax,
                             Tanh, TiedOutput)
from loopprop.plan import IN_OFF, OUT_OFF


def cnn(seed=0):
    return lp.Network([Conv2d(3, 3, stride=2, padding=1), BatchNorm(), Tanh(), AvgPool2d(2),
                       Flatten(), Dense(5), LayerNorm(), Tanh(), Dense(4), Softmax()],
                      loss="cross_entropy", input_shape=(2, 7, 7), seed=seed)


def gpt(seed=0):
    net = lp.Network([Embedding(7, 8), PositionEmbedding(6),
                      Residual([LayerNorm(), CausalSelfAttention(2)]), LayerNorm(),
                      TiedOutput(7), Softmax()], loss="cross_entropy", input_shape=(6,),
                     seed=seed)
    net.flat_params[:] *= 8.0  # attention far from uniform: gradients well above the FD noise
    return net


def batch(net, rng, m=3):
    if net.input_shape == (6,):
        return rng.integers(0, 7, (6, m)), rng.integers(0, 7, (6, m))
    return rng.standard_normal((*net.input_shape, m)), rng.integers(0, 4, m)


def region(net, buf, r, off_col, shape):
    _, m, _ = net._cache
    off = int(net.plan[r, off_col])
    return buf[off * m:(off + int(np.prod(shape))) * m].reshape(*shape, m)


def largest(net, X, y, layer, param):
    """The entry of ``param`` with the largest gradient: a test far from the FD noise."""
    net.zero_grad()
    net.forward(X)
    net.backward(y)
    names = net.rows[net.param_rows[layer - 1]].param_names
    g = np.asarray(net.grads[layer - 1][names.index(param)])
    return tuple(int(v) for v in np.unravel_index(np.argmax(np.abs(g)), g.shape))


def check(e, text_terms=3):
    scale = max(abs(e.backward), 1e-12)
    assert abs(e.total - e.backward) <= 1e-10 * scale
    assert abs(e.total - e.numeric) <= 1e-8 * scale + 1e-10
    text = str(e)
    assert f"total            = {e.total:.12g}" in text
    for t in sorted(e.terms, key=lambda t: -abs(t.value))[:text_terms]:
        assert f"at {t.where}:" in text


CASES = [  # (network, layer among the parameterized, param)
    ("cnn", 1, "W"), ("cnn", 3, "b"), ("cnn", 2, "gamma"), ("cnn", 2, "beta"),
    ("cnn", 3, "W"), ("cnn", 4, "gamma"), ("cnn", 5, "b"),
    ("gpt", 1, "E"), ("gpt", 2, "W"), ("gpt", 3, "gamma"), ("gpt", 4, "W_qkv"),
    ("gpt", 4, "b_qkv"), ("gpt", 4, "W_o"), ("gpt", 4, "b_o"),
]


@pytest.mark.parametrize("model,layer,param", CASES)
def test_total_equals_backward_and_finite_differences(rng, model, layer, param):
    net = cnn() if model == "cnn" else gpt()
    X, y = batch(net, rng)
    index = largest(net, X, y, layer, param)
    e = explain_param(net, X, y, layer=layer, param=param, index=index, top=4)
    assert e.index == index and e.param == param
    check(e)
    assert math.fsum(t.value for t in e.terms) == e.total


@pytest.mark.parametrize("index", [(2, 1, 0, 2), (0, 0, 2, 1), (1, 1, 1, 1)])
def test_every_convolution_term_is_dY_times_the_input_pixel_it_reads(rng, index):
    net = cnn()
    X, y = batch(net, rng)
    e = explain_param(net, X, y, layer=1, param="W", index=index)
    buf, m, _ = net._cache
    r = net.param_rows[0]
    A = region(net, buf.acts, r, IN_OFF, (2, 7, 7))
    dZ = region(net, buf.dacts, r, OUT_OFF, (3, 4, 4))
    o, c, p, q = index
    want = {}
    for yy in range(4):
        for xx in range(4):
            u, v = 2 * yy + p - 1, 2 * xx + q - 1  # stride 2, padding 1
            if 0 <= u < 7 and 0 <= v < 7:
                for k in range(m):
                    want[(yy, xx, k)] = dZ[o, yy, xx, k] * A[c, u, v, k]
    assert {t.where: t.value for t in e.terms} == pytest.approx(want, rel=1e-15)
    check(e)


def test_batchnorm_terms_use_the_batch_statistics_and_show_the_three_paths(rng):
    net = cnn()
    X, y = batch(net, rng)
    c = largest(net, X, y, 2, "gamma")[0]
    e = explain_param(net, X, y, layer=2, param="gamma", index=(c,))
    buf, m, _ = net._cache
    r = net.param_rows[1]
    Z = region(net, buf.acts, r, IN_OFF, (3, 4, 4))[c].ravel()
    g = region(net, buf.dacts, r, OUT_OFF, (3, 4, 4))[c]
    xhat = ((Z - Z.mean()) / np.sqrt(Z.var() + 1e-5)).reshape(4, 4, m)
    assert {t.where: t.value for t in e.terms} == pytest.approx(
        {w: g[w] * xhat[w] for w in np.ndindex(4, 4, m)}, rel=1e-12)
    text = str(e)
    for piece in ("three coupled paths", "through x̂ directly", "through σ²", "through μ"):
        assert piece in text
    # the three paths add up to the gradient batch norm passes to its input (vectorized here)
    N, gamma = Z.size, float(net.params[1][0][c])
    gh = gamma * g.ravel()
    rr = 1 / np.sqrt(Z.var() + 1e-5)
    xh = (Z - Z.mean()) * rr
    dx = rr / N * (N * gh - gh.sum() - xh * np.sum(gh * xh))
    assert f"sum = {lp.explain_layers._fmt(dx[0])}" in text
    check(e)


def test_batchnorm_in_evaluation_mode_uses_the_running_statistics(rng):
    net = cnn()
    X, y = batch(net, rng)
    net.fit(X, y, epochs=2, batch_size=3, progress=False)  # running statistics move
    net.eval()
    e = explain_param(net, X, y, layer=2, param="gamma", index=largest(net, X, y, 2, "gamma"))
    assert "running statistics" in str(e) and "three coupled paths" not in str(e)
    check(e)


def test_embedding_terms_are_its_lookups_plus_the_tied_output(rng):
    net = gpt()
    X, y = batch(net, rng)
    v = int(X[2, 1])  # a token that is in the batch
    e = explain_param(net, X, y, layer=1, param="E", index=(3, v))
    buf, m, _ = net._cache
    dX = region(net, buf.dacts, 0, OUT_OFF, (8, 6))
    lookups = {("lookup", t, k): dX[3, t, k] for t in range(6) for k in range(m) if X[t, k] == v}
    tied = next(r for r, row in enumerate(net.rows) if isinstance(row, TiedOutput))
    Xo = region(net, buf.acts, tied, IN_OFF, (8, 6))
    dZ = region(net, buf.dacts, tied, OUT_OFF, (7, 6))
    outputs = {("output", t, k): Xo[3, t, k] * dZ[v, t, k] for t in range(6) for k in range(m)}
    assert {t.where: t.value for t in e.terms} == pytest.approx({**lookups, **outputs},
                                                                rel=1e-15)
    check(e)


@pytest.mark.parametrize("row", [3, 8 + 5, 16 + 2])  # a row of Q, of K, of V
def test_attention_terms_follow_the_softmax_path_as_torch_computes_it(rng, row):
    torch = torch_or_skip()
    net = gpt()
    X, y = batch(net, rng)
    e = explain_param(net, X, y, layer=4, param="W_qkv", index=(row, 2))
    assert ("of head" in str(e)) and ("dS = P ⊙ (dP − Σ_s P·dP)" in str(e))
    buf, m, _ = net._cache
    r = net.param_rows[3]
    A = torch.tensor(region(net, buf.acts, r, IN_OFF, (8, 6)))
    dY = torch.tensor(region(net, buf.dacts, r, OUT_OFF, (8, 6)))
    W_qkv, b_qkv, W_o, b_o = (torch.tensor(np.asarray(p)) for p in net.params[3])
    QKV = (torch.einsum("rc,ctk->rtk", W_qkv, A) + b_qkv[:, None, None]).detach()
    QKV.requires_grad_(True)
    q, k_, v_ = (QKV[i * 8:(i + 1) * 8].reshape(2, 4, 6, m).permute(3, 0, 2, 1)
                 for i in range(3))  # (m, heads, T, d_head)
    O = torch.nn.functional.scaled_dot_product_attention(q, k_, v_, is_causal=True)
    O = O.permute(1, 3, 2, 0).reshape(8, 6, m)
    Y = torch.einsum("ij,jtk->itk", W_o, O) + b_o[:, None, None]
    (Y * dY).sum().backward()  # L's gradient at Y is dY: QKV.grad is ∂L/∂QKV
    dqkv = QKV.grad.numpy()
    want = {(t, k): dqkv[row, t, k] * float(A[2, t, k]) for t in range(6) for k in range(m)}
    assert {t.where: t.value for t in e.terms} == pytest.approx(want, rel=1e-9, abs=1e-15)
    check(e)


def test_long_sums_print_the_largest_terms_and_the_rest(rng):
    net = cnn()
    X, y = batch(net, rng, m=5)
    e = explain_param(net, X, y, layer=1, param="W", index=(0, 0, 1, 1), top=3)
    text = str(e)
    ranked = sorted(e.terms, key=lambda t: -abs(t.value))
    assert f"{len(e.terms)} terms; the 3 largest:" in text
    rest = math.fsum(t.value for t in ranked[3:])
    assert f"… and {len(e.terms) - 3} more terms, summing to {lp.explain_layers._fmt(rest)}" \
        in text
    assert str(lp.explain(net, X, y, layer=1, param="W", index=(0, 0, 1, 1), top=3)) == text


def test_bad_requests_get_clear_errors(rng):
    net = cnn()
    X, y = batch(net, rng)
    with pytest.raises(ValueError, match="has W, b; got 'gamma'"):
        explain_param(net, X, y, layer=1, param="gamma")
    with pytest.raises(ValueError, match=r"has shape \(3, 2, 3, 3\); got \(3, 0, 0, 0\)"):
        explain_param(net, X, y, layer=1, param="W", index=(3, 0, 0, 0))
    with pytest.raises(ValueError, match="5 layers with parameters"):
        explain_param(net, X, y, layer=6)


def test_cli_explains_any_layer_of_a_model(capsys):
    from loopprop import cli

    assert cli.main(["explain", "--model", "cnn", "--layer", "1", "--param", "W", "--index",
                     "3,0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "dW[3, 0, 1, 2] = Σ_(y,x,k) dY[3, y, x, k] · X[0, 1y + 1 − 1, 1x + 2 − 1, k]" in out
    assert "finite differences" in out
    assert cli.main(["explain", "--model", "gpt", "--layer", "4", "--param", "W_qkv",
                     "--index", "1,0"]) == 0
    assert "through the softmax" in capsys.readouterr().out
    assert cli.main(["explain", "--model", "resnet", "--layer", "2", "--param", "gamma"]) == 0
    assert "three coupled paths" in capsys.readouterr().out
    assert cli.main(["explain", "--model", "cnn", "--param", "Q"]) == 2
    assert "has W, b; got 'Q'" in capsys.readouterr().err


def test_dense_layernorm_position_and_output_projection_terms(rng):
    """The remaining sums, each term recomputed here: a dense weight (dY·X over the batch), a
    layer-norm gain (dY·x̂ with x̂ over each column's features), a position embedding (dY over
    the batch at one position) and attention's output projection (dY·O, O from torch)."""
    net = cnn()
    X, y = batch(net, rng)
    e = explain_param(net, X, y, layer=3, param="W", index=(2, 7))
    buf, m, _ = net._cache
    r = net.param_rows[2]
    A = region(net, buf.acts, r, IN_OFF, (12,))
    dZ = region(net, buf.dacts, r, OUT_OFF, (5,))
    assert {t.where: t.value for t in e.terms} == pytest.approx(
        {(k,): dZ[2, k] * A[7, k] for k in range(m)}, rel=1e-15)
    e = explain_param(net, X, y, layer=4, param="gamma", index=(3,))
    r = net.param_rows[3]
    Z = region(net, buf.acts, r, IN_OFF, (5,))
    g = region(net, buf.dacts, r, OUT_OFF, (5,))
    xhat = (Z - Z.mean(axis=0)) / np.sqrt(Z.var(axis=0) + 1e-5)
    assert {t.where: t.value for t in e.terms} == pytest.approx(
        {(k,): g[3, k] * xhat[3, k] for k in range(m)}, rel=1e-12)

    net = gpt()
    X, y = batch(net, rng)
    e = explain_param(net, X, y, layer=2, param="W", index=(5, 4))
    buf, m, _ = net._cache
    dP = region(net, buf.dacts, 1, OUT_OFF, (8, 6))
    assert {t.where: t.value for t in e.terms} == pytest.approx(
        {(k,): dP[5, 4, k] for k in range(m)}, rel=1e-15)
    torch = torch_or_skip()
    e = explain_param(net, X, y, layer=4, param="W_o", index=(1, 6))
    r = net.param_rows[3]
    A = torch.tensor(region(net, buf.acts, r, IN_OFF, (8, 6)))
    dY = region(net, buf.dacts, r, OUT_OFF, (8, 6))
    W_qkv, b_qkv = (torch.tensor(np.asarray(p)) for p in net.params[3][:2])
    QKV = torch.einsum("rc,ctk->rtk", W_qkv, A) + b_qkv[:, None, None]
    q, k_, v_ = (QKV[i * 8:(i + 1) * 8].reshape(2, 4, 6, m).permute(3, 0, 2, 1)
                 for i in range(3))
    O = torch.nn.functional.scaled_dot_product_attention(q, k_, v_, is_causal=True)
    O = O.permute(1, 3, 2, 0).reshape(8, 6, m).numpy()
    assert {t.where: t.value for t in e.terms} == pytest.approx(
        {(t, k): dY[1, t, k] * O[6, t, k] for t in range(6) for k in range(m)}, rel=1e-9)
    check(e)
