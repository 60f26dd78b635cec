"""The GPT as a whole, as llm.c's ``test_gpt2.c`` checks it but tighter: a 2-layer model with
the same weights as a reference GPT written here in PyTorch -- logits, loss and every
parameter's gradient by name to 1e-9 in float64, then ten AdamW steps with equal losses.
Also: the tuned attention kernels against the naive ones, the layers' bad-input errors."""

import numpy as np
import pytest
from helpers import (assert_close, assert_lm_step_equals_torch, torch_adamw_losses,
                     torch_or_skip)

import loopprop as lp
from loopprop import models
from loopprop.layers import (CausalSelfAttention, Dense, Embedding, LayerNorm, PositionEmbedding,
                             TiedOutput)

V, BLOCK, N_LAYER, N_HEAD, N_EMBD = 11, 8, 2, 2, 12


def parameters_by_name(net):
    """``{reference name: (layer, our array's name, transposed?)}`` for every parameter of a
    ``models.gpt`` network (``E`` and positions are stored transposed to PyTorch's)."""
    rows = net.rows
    emb = next(v for v in rows if isinstance(v, Embedding))
    pos = next(v for v in rows if isinstance(v, PositionEmbedding))
    table = {"E": (emb, "E", True), "P": (pos, "W", True)}
    lns = [v for v in rows if isinstance(v, LayerNorm)]
    atts = [v for v in rows if isinstance(v, CausalSelfAttention)]
    dense = [v for v in rows if isinstance(v, Dense)]
    for i in range(N_LAYER):
        ln1, ln2 = lns[2 * i], lns[2 * i + 1]
        att, fc, proj = atts[i], dense[2 * i], dense[2 * i + 1]
        table.update({f"ln1_{i}.g": (ln1, "gamma", False), f"ln1_{i}.b": (ln1, "beta", False),
                      f"att{i}.Wqkv": (att, "W_qkv", False), f"att{i}.bqkv": (att, "b_qkv", False),
                      f"att{i}.Wo": (att, "W_o", False), f"att{i}.bo": (att, "b_o", False),
                      f"ln2_{i}.g": (ln2, "gamma", False), f"ln2_{i}.b": (ln2, "beta", False),
                      f"fc{i}.W": (fc, "W", False), f"fc{i}.b": (fc, "b", False),
                      f"proj{i}.W": (proj, "W", False), f"proj{i}.b": (proj, "b", False)})
    table.update({"lnf.g": (lns[-1], "gamma", False), "lnf.b": (lns[-1], "beta", False)})
    return table


def reference_gpt(torch, net):
    """GPT-2 written plainly in PyTorch (nanoGPT's structure, batch first), its parameters
    copied from ``net`` (our layout converted); returns ``(forward, params by our name)``."""
    F = torch.nn.functional
    t = {}
    for name, (layer, attr, transpose) in parameters_by_name(net).items():
        a = np.asarray(getattr(layer, attr), np.float64)
        t[name] = torch.tensor(a.T.copy() if transpose else a.copy(), requires_grad=True)
    wte, wpe = t["E"], t["P"]  # (V, d), (T_max, d)
    blocks = [{part: (t[f"{prefix}{i}.{w}"], t[f"{prefix}{i}.{b}"])
               for part, prefix, w, b in (("ln1", "ln1_", "g", "b"), ("qkv", "att", "Wqkv", "bqkv"),
                                          ("o", "att", "Wo", "bo"), ("ln2", "ln2_", "g", "b"),
                                          ("fc", "fc", "W", "b"), ("proj", "proj", "W", "b"))}
              for i in range(N_LAYER)]
    lnf = (t["lnf.g"], t["lnf.b"])

    def forward(ids):  # ids (B, T) -> logits (B, T, V)
        B, T = ids.shape
        x = wte[ids] + wpe[:T]
        for b in blocks:
            h = F.layer_norm(x, (N_EMBD,), *b["ln1"], eps=1e-5)
            q, k, v = F.linear(h, *b["qkv"]).split(N_EMBD, dim=2)
            q, k, v = (a.view(B, T, N_HEAD, N_EMBD // N_HEAD).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, N_EMBD)
            x = x + F.linear(y, *b["o"])
            h = F.layer_norm(x, (N_EMBD,), *b["ln2"], eps=1e-5)
            x = x + F.linear(F.gelu(F.linear(h, *b["fc"]), approximate="tanh"), *b["proj"])
        x = F.layer_norm(x, (N_EMBD,), *lnf, eps=1e-5)
        return x @ wte.T  # tied output layer

    return forward, t


def our_grads(net):
    """Our gradients under the reference's names, converted to its layout."""
    return {name: getattr(layer, "d" + attr).T if transpose else getattr(layer, "d" + attr)
            for name, (layer, attr, transpose) in parameters_by_name(net).items()}


def batch(rng, m, T=BLOCK):
    seq = rng.integers(0, V, (T + 1, m))
    return seq[:-1], seq[1:]  # inputs and next tokens, (T, m) each


def test_gpt_matches_reference_pytorch_model(rng):
    """Logits, loss and every parameter gradient by name, float64, to 1e-9."""
    torch = torch_or_skip()
    net = models.gpt(V, BLOCK, N_LAYER, N_HEAD, N_EMBD, dtype="float64", seed=3)
    for layer in net.rows:  # nonzero biases and gains, so that their gradients are tested
        for name in (layer.param_names if layer.n_params else ()):
            if name.startswith("b") or name == "gamma":
                arr = getattr(layer, name)
                arr[...] = arr + 0.1 * rng.standard_normal(arr.shape)
    X, Y = batch(rng, 3)
    forward, params = reference_gpt(torch, net)
    assert_lm_step_equals_torch(torch, net, X, Y, forward, params, our_grads, V)


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_gpt_adamw_steps_match_pytorch(rng):
    """Ten AdamW steps (decay on the weight matrices and the token embedding only, clipping,
    as our defaults): every loss equal to 1e-9."""
    torch = torch_or_skip()
    net = models.gpt(V, BLOCK, N_LAYER, N_HEAD, N_EMBD, dtype="float64", seed=4)
    X, Y = batch(rng, 5)
    forward, params = reference_gpt(torch, net)
    decay = [p for n, p in params.items() if n in ("E",) or n.endswith(("W", "Wqkv", "Wo"))]
    ref = torch_adamw_losses(torch, forward, params, decay, X, Y, V, 10, lr=3e-3, clip=1.0)
    hist = net.fit(X, Y, epochs=10, batch_size=5, optimizer="adamw", lr=3e-3, beta1=0.9,
                   beta2=0.95, weight_decay=0.1, clip_grad_norm=1.0, shuffle=False,
                   progress=False)
    assert_close("losses", hist["loss"], ref, 1e-9)
    assert ref[-1] < ref[0]


def test_untied_gpt_gradients_match_finite_differences(rng):
    net = models.gpt(7, 4, 1, 2, 4, tie_weights=False, dtype="float64", seed=1)
    X, Y = batch(np.random.default_rng(5), 2, T=4)
    X, Y = X % 7, Y % 7
    assert lp.gradcheck(net, X, Y) < 1e-6


def test_tied_gpt_gradients_match_finite_differences(rng):
    net = models.gpt(7, 4, 1, 2, 4, dtype="float64", seed=1)
    X, Y = batch(np.random.default_rng(6), 2, T=4)
    assert lp.gradcheck(net, X % 7, Y % 7) < 1e-6


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_gpt_is_bitwise_reproducible_across_thread_counts(rng):
    import numba

    X, Y = batch(rng, 8)
    weights = []
    for threads in (1, 2):
        if threads > numba.config.NUMBA_NUM_THREADS:
            pytest.skip("one thread only")
        numba.set_num_threads(threads)
        try:
            net = models.gpt(V, BLOCK, N_LAYER, N_HEAD, N_EMBD, dtype="float32", seed=0)
            net.fit(X, Y, epochs=3, batch_size=4, optimizer="adamw", lr=1e-3, progress=False)
            weights.append(net.flat_params.copy())
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(weights[0], weights[1])


# -- bad input ------------------------------------------------------------------------------


def test_bad_ids_and_shapes_get_clear_errors(rng):
    net = models.gpt(V, BLOCK, 1, 2, 4, dtype="float64")
    X, Y = batch(rng, 2)
    with pytest.raises(ValueError, match=r"token id 11 is outside the vocabulary \[0, 11\)"):
        net.forward(np.where(np.arange(X.size).reshape(X.shape) == 3, V, X))
    with pytest.raises(TypeError, match="token ids must be integers"):
        net.forward(X + 0.5)
    with pytest.raises(ValueError, match=r"sequences of 9 tokens are longer than the model's "
                       r"window T = 8 \(its block_size"):
        net.forward(np.zeros((BLOCK + 1, 2), np.int64))
    with pytest.raises(ValueError, match=r"expected labels of shape \(8, 2\)"):
        net.forward(X)
        net.backward(Y[:, :1])
    with pytest.raises(ValueError, match="not divisible by n_head"):
        models.gpt(V, BLOCK, 1, 3, 4)
    with pytest.raises(ValueError, match="must be the first layer"):
        lp.Network([Dense(4), Embedding(3, 2), TiedOutput(3), lp.layers.Softmax()],
                   "cross_entropy", input_shape=(4,))
    with pytest.raises(ValueError, match="longer than block_size=4"):
        lp.Network([Embedding(3, 2), PositionEmbedding(4), TiedOutput(3), lp.layers.Softmax()],
                   "cross_entropy", input_shape=(5,))
    with pytest.raises(ValueError, match="reads the matrix E"):
        lp.Network([Embedding(3, 2), TiedOutput(4), lp.layers.Softmax()], "cross_entropy",
                   input_shape=(5,))
    with pytest.raises(ValueError, match="the network has none"):
        lp.Network([Dense(2), TiedOutput(4), lp.layers.Softmax()], "cross_entropy",
                   input_shape=(2, 5))


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_blocked_optimizer_kernels_are_thread_count_independent(rng):
    """The optimizers' parallel drivers (used for every model): the same bits on one thread and
    two, the clipped norm equal to NumPy's, AdamW equal to the one-loop kernel."""
    from loopprop.kernels.optim import (BLOCK, _adam, _adam_threads, _adamw, _adamw_threads,
                                        _clip_grad_norm_threads)

    n = 3 * BLOCK + 123
    g = rng.standard_normal(n)
    norms, clipped = [], []
    for threads in (1, 2):
        c = g.copy()
        norms.append(_clip_grad_norm_threads(c, 1.0, threads))
        clipped.append(c)
    assert norms[0] == norms[1] and np.array_equal(clipped[0], clipped[1])
    assert abs(norms[0] - np.linalg.norm(g)) <= 1e-12 * np.linalg.norm(g)
    assert_close("clipped", clipped[0], g / (np.linalg.norm(g) + 1e-6), 1e-12)
    theta, m1, m2 = rng.standard_normal((3, n))
    m2 = np.abs(m2)
    # decayed spans that start and end inside blocks, cross block boundaries, touch the ends
    spans = np.array([[0, 1000], [BLOCK - 7, 2 * BLOCK + 5], [3 * BLOCK + 100, n]], np.int64)
    decay = np.zeros(n)
    for lo, hi in spans:
        decay[lo:hi] = 1.0
    # the one-loop kernel on pieces of one d each (cut where d changes, and every 997)
    ref = [a.copy() for a in (theta, m1, m2)]
    cuts = sorted({0, n, *spans.ravel().tolist(), *range(0, n, 997)})
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        _adamw(ref[0][lo:hi], g[lo:hi], ref[1][lo:hi], ref[2][lo:hi], decay[lo], 1e-3, 0.9,
               0.95, 1e-8, 3, 0.1)
    # the NumPy formula: θ(1 − ηλd), then Adam
    m1n = 0.9 * m1 + 0.1 * g
    m2n = 0.95 * m2 + 0.05 * g * g
    thetan = theta * (1 - 1e-3 * 0.1 * decay) - 1e-3 * (m1n / (1 - 0.9**3)) / (
        np.sqrt(m2n / (1 - 0.95**3)) + 1e-8)
    assert_close("AdamW against NumPy", ref[0], thetan, 1e-13)
    runs = []
    for threads in (1, 2):
        out = [a.copy() for a in (theta, m1, m2)]
        _adamw_threads(out[0], g, out[1], out[2], spans, 1e-3, 0.9, 0.95, 1e-8, 3, 0.1, threads)
        runs.append(out)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    for name, a, b in zip(("theta", "m1", "m2"), runs[0], ref):  # fused multiply-adds may
        assert_close(name, a, b, 1e-15)                         # fall differently
    ref = [a.copy() for a in (theta, m1, m2)]
    _adam(ref[0], g, ref[1], ref[2], 1e-3, 0.9, 0.95, 1e-8, 3)
    runs = []
    for threads in (1, 2):
        out = [a.copy() for a in (theta, m1, m2)]
        _adam_threads(out[0], g, out[1], out[2], 1e-3, 0.9, 0.95, 1e-8, 3, threads)
        runs.append(out)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    for name, a, b in zip(("theta", "m1", "m2"), runs[0], ref):
        assert_close(name, a, b, 1e-15)


def test_sequence_cross_entropy_matches_torch(rng):
    """``softmax_cross_entropy`` on (V, T, m) logits with (T, m) labels: the mean over every
    position, against PyTorch's cross_entropy on (m·T, V)."""
    torch = torch_or_skip()
    Z = rng.standard_normal((7, 5, 3))
    y = rng.integers(0, 7, (5, 3))
    tZ = torch.tensor(np.ascontiguousarray(Z.transpose(2, 1, 0)), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(tZ.reshape(-1, 7), torch.tensor(y.T).reshape(-1))
    ref.backward()
    for impl in ("tuned", "naive"):
        loss, dZ = lp.softmax_cross_entropy(Z, y, impl=impl)
        assert abs(loss - ref.item()) <= 1e-12 * ref.item()
        assert_close("dZ", dZ, tZ.grad.numpy().transpose(2, 1, 0), 1e-12)
    with pytest.raises(ValueError, match=r"integer labels of shape \(5, 3\)"):
        lp.softmax_cross_entropy(Z, y[:, :2])


@pytest.mark.parametrize("where", ["1:Embedding.E", "4:CausalSelfAttention.W_qkv",
                                   "12:CausalSelfAttention.b_o", "19:LayerNorm.beta"])
def test_a_nan_parameter_of_any_kind_stops_fit_text_naming_it(where):
    """Embedding has one parameter array, attention four: the divergence check once unpacked
    two per layer and crashed with 'not enough values to unpack'."""
    net = models.gpt(11, 8, 2, 2, 16, dtype="float64", seed=0)
    ids = np.random.default_rng(0).integers(0, 11, 400)
    rows = list(dict.fromkeys(int(name.split(":")[0]) for name in net._param_names))
    off = net._norm_spans[net._param_names.index(where)][0]
    net.flat_params[off] = np.nan
    layer = rows.index(int(where.split(":")[0])) + 1
    with pytest.raises(FloatingPointError, match=rf"layer {layer} \({where}\) hold NaN or Inf "
                       "before training"):
        net.fit_text(ids, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)


def test_a_gpt_diverging_under_a_huge_learning_rate_says_so():
    net = models.gpt(11, 8, 2, 2, 16, dtype="float32", seed=0)
    ids = np.random.default_rng(0).integers(0, 11, 400)
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch \d+.*lr="):
        net.fit_text(ids, epochs=3, steps_per_epoch=20, batch_size=4, lr=1e30,
                     optimizer="sgd", progress=False)
