"""The recurrent layers inside a network: a char-level RNN, LSTM and GRU against the same model
in PyTorch (loss and every gradient by name, AdamW steps loss for loss), finite differences,
truncated backpropagation through time (fit_text against the Python loop, the carried state
against the whole stream), sampling with the carried state, save/load, explain's sum over time
steps, the gradient through time, and bad input."""

import numpy as np
import pytest
from helpers import (assert_close, assert_lm_step_equals_torch, one_line_error, run_cli,
                     torch_adamw_losses, torch_or_skip)

import loopprop as lp
from loopprop import Network, generate, models, text
from loopprop.explain_param import explain_param
from loopprop.layers import GRU, LSTM, RNN, Dense, Softmax
from loopprop.through_time import decay_per_step, gradient_through_time

V, HIDDEN, EMBD, T = 11, 8, 6, 5
CELLS = ["lstm", "gru", "rnn", "rnn_relu"]
CORPUS = "".join(f"the {w} sat on the {v}.\n" for w, v in
                 zip(["cat", "dog", "bird", "fox"] * 60, ["mat", "log", "rug", "box", "bed"] * 48))


def char_model(cell, *, vocab=V, hidden=HIDDEN, n_layer=2, block=T, dtype="float64", seed=3):
    if cell == "rnn_relu":
        layers = [lp.layers.Embedding(vocab, EMBD), *(RNN(hidden, "relu") for _ in range(n_layer)),
                  Dense(vocab), Softmax()]
        return Network(layers, loss="cross_entropy", input_shape=(block,), dtype=dtype,
                       seed=seed, init="xavier")
    return models.char_rnn(vocab, hidden, n_layer, cell=cell, block_size=block, n_embd=EMBD,
                           dtype=dtype, seed=seed)


def reference(torch, net):
    """The same model in PyTorch (weights copied; where loopprop keeps one bias, ``bias_ih``
    holds it and ``bias_hh`` is frozen at zero): a function of the ids ``(m, T)`` returning
    logits ``(m, T, V)``, and the parameters by loopprop's names (``"1.W_x"``: row 1's
    ``W_x``)."""
    rows = net.rows
    params = {"0.E": torch.tensor(np.array(rows[0].E), requires_grad=True)}
    modules = []
    for r, layer in enumerate(rows[1:-2], start=1):
        if isinstance(layer, RNN):
            mod = torch.nn.RNN(layer.d, layer.hidden, nonlinearity=layer.nonlinearity,
                               dtype=torch.float64)
        else:
            cls = torch.nn.LSTM if isinstance(layer, LSTM) else torch.nn.GRU
            mod = cls(layer.d, layer.hidden, dtype=torch.float64)
        with torch.no_grad():
            mod.weight_ih_l0.copy_(torch.tensor(np.array(layer.W_x)))
            mod.weight_hh_l0.copy_(torch.tensor(np.array(layer.W_h)))
            if isinstance(layer, GRU):
                mod.bias_ih_l0.copy_(torch.tensor(np.array(layer.b_x)))
                mod.bias_hh_l0.copy_(torch.tensor(np.array(layer.b_h)))
                params[f"{r}.b_x"], params[f"{r}.b_h"] = mod.bias_ih_l0, mod.bias_hh_l0
            else:
                mod.bias_ih_l0.copy_(torch.tensor(np.array(layer.b)))
                mod.bias_hh_l0.zero_()
                mod.bias_hh_l0.requires_grad_(False)
                params[f"{r}.b"] = mod.bias_ih_l0
        params[f"{r}.W_x"], params[f"{r}.W_h"] = mod.weight_ih_l0, mod.weight_hh_l0
        modules.append(mod)
    o = len(rows) - 2
    W = params[f"{o}.W"] = torch.tensor(np.array(rows[o].W), requires_grad=True)
    b = params[f"{o}.b"] = torch.tensor(np.array(rows[o].b), requires_grad=True)
    E = params["0.E"]

    def forward(ids):
        x = E.T[ids].transpose(0, 1)  # (T, m, d): PyTorch's sequence-first layout
        for mod in modules:
            x, _ = mod(x)
        return torch.nn.functional.linear(x, W, b).transpose(0, 1)  # (m, T, V)

    return forward, params


def grads_by_name(net):
    return {f"{r}.{name}": np.asarray(getattr(layer, "d" + name))
            for r, layer in enumerate(net.rows) for name in layer.param_names
            if name in net.layout["arrays"][r]}


def batch(rng, m, block=T, vocab=V):
    return rng.integers(0, vocab, (block, m)), rng.integers(0, vocab, (block, m))


@pytest.mark.parametrize("cell", CELLS)
def test_a_char_model_step_equals_pytorch(cell, rng):
    """Loss, probabilities and every gradient by name, float64, to 1e-9."""
    torch = torch_or_skip()
    net = char_model(cell)
    X, Y = batch(rng, 4)
    forward, params = reference(torch, net)
    assert_lm_step_equals_torch(torch, net, X, Y, forward, params, grads_by_name, V)


@pytest.mark.heavy  # trains: minutes with the JIT off
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_ten_adamw_steps_with_clipping_equal_pytorch(cell, rng):
    torch = torch_or_skip()
    net = char_model(cell, seed=5)
    X, Y = batch(rng, 6)
    forward, params = reference(torch, net)
    decay = [p for n, p in params.items() if n.endswith((".E", ".W", ".W_x", ".W_h"))]
    ref = torch_adamw_losses(torch, forward, params, decay, X, Y, V, 10, lr=1e-2, clip=0.5)
    hist = net.fit(X, Y, epochs=10, batch_size=6, optimizer="adamw", lr=1e-2, beta1=0.9,
                   beta2=0.95, weight_decay=0.1, clip_grad_norm=0.5, shuffle=False,
                   progress=False)
    assert_close("losses", hist["loss"], ref, 1e-9)
    assert ref[-1] < ref[0]


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell):
    net = char_model(cell, vocab=7, hidden=4, block=4, seed=1)
    X, Y = batch(np.random.default_rng(2), 3, block=4, vocab=7)
    assert lp.gradcheck(net, X, Y) < 1e-6


@pytest.mark.parametrize("layer", [RNN(5), LSTM(5), GRU(5)], ids=["rnn", "lstm", "gru"])
def test_a_recurrent_first_layer_on_float_sequences_equals_pytorch(layer, rng):
    """Row 0 (no input gradient to pass: the kernels' dx = 0): a regression on the flattened
    states."""
    torch = torch_or_skip()
    net = Network([layer, lp.layers.Flatten(), Dense(2)], loss="mse", input_shape=(3, 6),
                  dtype="float64", seed=2)
    X = rng.standard_normal((3, 6, 4))
    Y = rng.standard_normal((2, 4))
    net.forward(X)
    net.zero_grad()
    loss = net.backward(Y)
    layer = net.rows[0]  # the network's own copy, bound to its parameters
    cls = {RNN: torch.nn.RNN, LSTM: torch.nn.LSTM, GRU: torch.nn.GRU}[type(layer)]
    mod = cls(3, 5, dtype=torch.float64)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.tensor(layer.W_x))
        mod.weight_hh_l0.copy_(torch.tensor(layer.W_h))
        mod.bias_ih_l0.copy_(torch.tensor(layer.b_x if isinstance(layer, GRU) else layer.b))
        if isinstance(layer, GRU):
            mod.bias_hh_l0.copy_(torch.tensor(layer.b_h))
        else:
            mod.bias_hh_l0.zero_()
    W = torch.tensor(np.array(net.rows[2].W), requires_grad=True)
    b = torch.tensor(np.array(net.rows[2].b), requires_grad=True)
    H, _ = mod(torch.tensor(X.transpose(1, 2, 0)))  # (T, m, h)
    out = H.permute(1, 2, 0).reshape(4, 30) @ W.T + b  # Flatten of (h, T): j·T + t
    ref = ((out - torch.tensor(Y.T)) ** 2).sum() / (2 * 4)
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-10 * ref.item()
    assert_close("dW_h", layer.dW_h, mod.weight_hh_l0.grad.numpy(), 1e-10)
    assert_close("dW_x", layer.dW_x, mod.weight_ih_l0.grad.numpy(), 1e-10)
    assert_close("dW", net.rows[2].dW, W.grad.numpy(), 1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_the_carried_state_equals_the_whole_stream(cell, rng):
    """Windows fed one after another with carry=True give the outputs of one long sequence."""
    net = char_model(cell).eval()
    X = rng.integers(0, V, (3 * T, 4))
    whole = net.sharing((3 * T,)).forward(X)
    win = net.sharing((T,))
    parts = [win.forward(X[i * T:(i + 1) * T], carry=i > 0) for i in range(3)]
    assert_close("outputs", np.concatenate(parts, axis=1), whole, 1e-13)
    fresh = win.forward(X[T:2 * T])  # no carry: zero states, other outputs
    assert not np.allclose(fresh, whole[:, T:2 * T])


def consecutive_windows(ids, bs, block, steps):
    """The windows fit_text(windows="consecutive") takes: stream k starts at k·L."""
    L = (len(ids) - 1) // bs
    n_windows = L // block
    for step in range(steps):
        w = step % n_windows
        starts = [k * L + w * block for k in range(bs)]
        X = np.stack([ids[s:s + block] for s in starts], axis=1)
        Y = np.stack([ids[s + 1:s + block + 1] for s in starts], axis=1)
        yield X, Y, w > 0


@pytest.mark.heavy  # trains: minutes with the JIT off
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fit_text_with_consecutive_windows_equals_the_python_loop(cell):
    """Truncated BPTT in the compiled epoch: the same windows, the carried states, SGD: the
    same weights, bitwise; a window after the first starts from the states the last ended."""
    tok = text.CharTokenizer.from_text(CORPUS)
    ids = tok.encode(CORPUS)[:400]
    net = char_model(cell, vocab=tok.vocab_size)
    twin = char_model(cell, vocab=tok.vocab_size)
    bs, steps, lr = 3, 30, 0.1  # 399 // 3 = 133 per stream, 26 windows: wraps around twice
    net.fit_text(ids, epochs=2, steps_per_epoch=steps, windows="consecutive", batch_size=bs,
                 lr=lr, optimizer="sgd", weight_decay=0.0, clip_grad_norm=None,
                 lr_schedule="constant", progress=False)
    for X, Y, carry in consecutive_windows(ids, bs, T, 2 * steps):  # on across the epochs
        twin.zero_grad()
        twin.forward(X, carry=carry)
        twin.backward(Y)
        twin.step(lr)
    assert np.array_equal(net.flat_params, twin.flat_params)
    other = char_model(cell, vocab=tok.vocab_size)  # random windows train otherwise
    other.fit_text(ids, epochs=2, steps_per_epoch=steps, batch_size=bs, lr=lr,
                   optimizer="sgd", weight_decay=0.0, clip_grad_norm=None,
                   lr_schedule="constant", progress=False)
    assert not np.array_equal(other.flat_params, net.flat_params)


def test_consecutive_validation_reads_the_held_out_text_as_whole_streams():
    """With consecutive windows the validation loss carries the states from window to window:
    it equals the loss of each stream run as one long sequence."""
    tok = text.CharTokenizer.from_text(CORPUS)
    ids = tok.encode(CORPUS)
    train, val = ids[:300], ids[300:300 + 83]
    net = char_model("lstm", vocab=tok.vocab_size)
    hist = net.fit_text(train, epochs=1, steps_per_epoch=3, windows="consecutive", batch_size=4,
                        validation=val, progress=False)
    L = (len(val) - 1) // 4  # 20 tokens per stream: 4 windows of 5
    whole = net.sharing((4 * T,)).eval()
    X = np.stack([val[k * L:k * L + 4 * T] for k in range(4)], axis=1)
    Y = np.stack([val[k * L + 1:k * L + 4 * T + 1] for k in range(4)], axis=1)
    P = whole.forward(X)
    p = np.take_along_axis(P, Y[None], axis=0)[0]
    assert abs(hist["val_loss"][0] + np.log(p).mean()) <= 1e-12 * abs(np.log(p).mean())
    assert hist["val_accuracy"][0] == (P.argmax(axis=0) == Y).mean()


def test_one_pass_over_the_streams_is_the_default_epoch():
    """200 // 4 = 50 tokens per stream, 10 windows of 5: an epoch is 10 steps by default."""
    tok = text.CharTokenizer.from_text(CORPUS)
    ids = tok.encode(CORPUS)[:201]
    weights = []
    for steps in (None, 10, 9):
        net = char_model("gru", vocab=tok.vocab_size, dtype="float32")
        net.fit_text(ids, epochs=1, steps_per_epoch=steps, windows="consecutive", batch_size=4,
                     progress=False)
        weights.append(net.flat_params.copy())
    assert np.array_equal(weights[0], weights[1])
    assert not np.array_equal(weights[0], weights[2])


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_lstm_fit_text_is_bitwise_reproducible_across_thread_counts():
    import numba

    tok = text.CharTokenizer.from_text(CORPUS)
    ids = tok.encode(CORPUS)
    weights = []
    for threads in (1, 2):
        if threads > numba.config.NUMBA_NUM_THREADS:
            pytest.skip("one thread only")
        numba.set_num_threads(threads)
        try:
            net = models.char_rnn(tok.vocab_size, 32, 2, block_size=16, dtype="float32")
            net.fit_text(ids, epochs=1, steps_per_epoch=6, windows="consecutive",
                         batch_size=8, progress=False)
            weights.append(net.flat_params.copy())
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(weights[0], weights[1])


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_an_lstm_beats_the_unigram_entropy():
    """A fixed corpus: after training, the held-out loss is far below the entropy of the
    characters' frequencies (the best a model without context can do)."""
    tok = text.CharTokenizer.from_text(CORPUS)
    train, val = text.split(tok.encode(CORPUS), 0.1)
    net = models.char_rnn(tok.vocab_size, 64, 1, block_size=16, dtype="float32", seed=0)
    hist = net.fit_text(train, epochs=8, windows="consecutive", batch_size=8, lr=1e-2,
                        validation=val, progress=False)
    h = text.unigram_entropy(train, tok.vocab_size)
    assert hist["val_loss"][-1] < 0.6 * h, (hist["val_loss"], h)
    assert hist["val_loss"][-1] < hist["val_loss"][0]


@pytest.mark.heavy  # trains: minutes with the JIT off
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sampling_with_the_carried_state_equals_recomputing_from_the_prompt(cell):
    tok = text.CharTokenizer.from_text(CORPUS)
    net = char_model(cell, vocab=tok.vocab_size, block=8, seed=2)
    net.fit_text(tok.encode(CORPUS), epochs=1, steps_per_epoch=10, batch_size=8,
                 progress=False)
    prompt = tok.encode("the cat sat")  # longer than the window: no limit on the context
    stepper = generate._Stepper(net)
    full = net.sharing((len(prompt),)).predict(prompt[:, None])[:, :, 0]
    for pos, t in enumerate(prompt):
        assert_close(f"probabilities at {pos}", stepper.step(int(t), pos), full[:, pos], 1e-12)
    a = generate.sample(net, prompt, 30, temperature=0.9, seed=3)
    b = generate.sample(net, prompt, 30, temperature=0.9, seed=3, use_cache=False)
    assert a.tolist() == b.tolist()
    assert generate.sample(net, prompt, 30, temperature=0.9, seed=4).tolist() != a.tolist()


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_sampling_goes_on_from_a_returned_state():
    """Two calls carrying the state draw what one call on the joined text draws: the second
    call's prompt continues the first's text from its states."""
    tok = text.CharTokenizer.from_text(CORPUS)
    net = char_model("lstm", vocab=tok.vocab_size, block=8, seed=4)
    net.fit_text(tok.encode(CORPUS), epochs=1, steps_per_epoch=5, batch_size=4, progress=False)
    first, second = tok.encode("the dog "), tok.encode("sat")
    ids, state = generate.sample(net, first, 6, seed=1, return_state=True)
    assert isinstance(state, generate.RecurrentState) and len(ids) == 6
    went_on = generate.sample(net, second, 10, seed=2, state=state)
    whole = np.concatenate([first, ids, second])
    assert went_on.tolist() == generate.sample(net, whole, 10, seed=2).tolist()
    fresh, carried = generate._Stepper(net), generate._Stepper(net)  # the state matters
    carried.kv[:] = state.values
    assert np.abs(state.values).max() > 0
    assert not np.allclose(fresh.step(int(second[0]), 0), carried.step(int(second[0]), 0))
    other = char_model("gru", vocab=tok.vocab_size, block=8)
    with pytest.raises(ValueError, match=r"state: it was made by sampling from another model "
                       r"\(Embedding.*LSTM.*\); this one is .*GRU.*state=None"):
        generate.sample(other, second, 3, state=state)
    with pytest.raises(TypeError, match="state: expected a RecurrentState"):
        generate.sample(net, second, 3, state=state.values)
    gpt = models.gpt(tok.vocab_size, 8, 1, 1, 8, dtype="float64")
    with pytest.raises(ValueError, match="return_state: carried states are a recurrent "
                       "model's.*pass the whole context as the prompt"):
        generate.sample(gpt, second, 3, return_state=True)
    with pytest.raises(ValueError, match="state: states are carried by the stepping sampler"):
        generate.sample(net, second, 3, state=state, use_cache=False)


def test_save_load_keeps_a_recurrent_model_and_its_samples(tmp_path):
    tok = text.CharTokenizer.from_text(CORPUS)
    net = models.char_rnn(tok.vocab_size, 16, 2, cell="gru", block_size=8, dtype="float32")
    net.metadata["tokenizer"] = tok.to_config()
    net.save(tmp_path / "r.npz")
    back = Network.load(tmp_path / "r.npz")
    assert [repr(r) for r in back.rows] == [repr(r) for r in net.rows]
    assert np.array_equal(back.flat_params, net.flat_params)
    prompt = tok.encode("the dog")
    assert np.array_equal(generate.sample(net, prompt, 20, seed=1),
                          generate.sample(back, prompt, 20, seed=1))
    relu = Network([lp.layers.Embedding(5, 3), RNN(4, "relu"), Dense(5), Softmax()],
                   loss="cross_entropy", input_shape=(6,))
    relu.save(tmp_path / "relu.npz")
    assert Network.load(tmp_path / "relu.npz").rows[1].nonlinearity == "relu"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_explain_lists_the_recurrent_weight_gradient_step_by_step(cell, rng):
    """``∂L/∂W_h[i, j]`` as one term per time step: the terms add up to backward's value and
    to finite differences, and the text names the sum over t."""
    net = char_model(cell)
    X, Y = batch(rng, 2)
    net.forward(X)
    net.zero_grad()
    net.backward(Y)
    i, j = np.unravel_index(np.argmax(np.abs(net.rows[1].dW_h)), net.rows[1].dW_h.shape)
    e = explain_param(net, X, Y, layer=2, param="W_h", index=(i, j), top=3)
    assert len(e.terms) == T and sorted(t.where for t in e.terms) == [(t,) for t in range(T)]
    assert abs(e.total - e.backward) <= 1e-10 * abs(e.backward)
    assert abs(e.total - e.numeric) <= 1e-6 * max(abs(e.backward), 1e-8)
    text_ = str(e)
    assert f"Σ_t Σ_k δ_t[{i}, k]·h_(t−1)[{j}, k]" in text_
    assert "Backpropagation through time" in text_
    assert "‖∂L/∂h_t‖ over t" in text_
    shown = [line for line in text_.splitlines() if line.startswith("  at (")]
    values = [abs(t.value) for t in sorted(e.terms, key=lambda t: -abs(t.value))[:3]]
    assert len(shown) == 3 and values == sorted(values, reverse=True)
    for param, index in (("W_x", (0, 1)), ("b_h" if cell == "gru" else "b", (3,))):
        e = explain_param(net, X, Y, layer=3, param=param, index=index)
        assert abs(e.total - e.backward) <= 1e-10 * max(abs(e.backward), 1e-12)


def test_an_lstm_carries_the_gradient_further_back_than_an_rnn():
    """‖∂L_{T−1}/∂h_t‖ on the same data: the plain RNN's shrinks by a larger factor per step
    back than the LSTM's (whose forget gates start open: bias 1)."""
    rng = np.random.default_rng(0)
    X, Y = batch(rng, 8, block=30, vocab=V)
    norms = {}
    for cell in ("rnn", "lstm"):
        net = models.char_rnn(V, 64, 1, cell=cell, block_size=30, n_embd=16,
                              dtype="float64", seed=0)
        norms[cell] = gradient_through_time(net, X, Y)
        assert norms[cell].shape == (30,) and (norms[cell] > 0).all()
    rnn, lstm = decay_per_step(norms["rnn"]), decay_per_step(norms["lstm"])
    assert rnn < lstm < 1.0, (rnn, lstm)
    assert norms["lstm"][0] / norms["lstm"][-1] > 100 * norms["rnn"][0] / norms["rnn"][-1]


@pytest.mark.heavy  # trains: minutes with the JIT off
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_cli_trains_a_recurrent_model_and_samples(cell, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    model = tmp_path / "r.npz"
    r = run_cli("train", "--model", cell, "--text", str(corpus), "--epochs", "2",
                "--steps-per-epoch", "5", "--hidden", "16", "--n-layer", "1", "--n-embd", "8",
                "--block-size", "16", "--batch-size", "8", "--save", str(model),
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{cell}: 1 layer of 16 units" in r.stdout and "truncated BPTT" in r.stdout
    assert "consecutive windows carrying the states" in r.stdout
    assert "validation loss" in r.stdout
    r = run_cli("sample", str(model), "--prompt", "the cat sat on the mat. the dog", "--tokens",
                "40", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the cat sat on the mat. the dog")
    assert len(r.stdout.rstrip("\n")) >= 31 + 40
    e = run_cli("explain", "--model", cell, "--layer", "2", "--param", "W_h", "--index", "1,2")
    assert e.returncode == 0, e.stderr
    assert "Σ_t Σ_k δ_t[1, k]·h_(t−1)[2, k]" in e.stdout and "8 terms" in e.stdout
    d = run_cli("diagram", "unrolled", "--model", cell)
    assert d.returncode == 0 and d.stdout.startswith("flowchart LR"), d.stderr


def test_cli_recurrent_errors(tmp_path):
    one_line_error(run_cli("train", "--model", "lstm", "--hidden", "16-8"),
                   "--hidden: one size for --model lstm")
    one_line_error(run_cli("train", "--model", "gru", "--n-head", "2"),
                   "--n-head: not used by --model gru")
    one_line_error(run_cli("train", "--model", "rnn", "--loss", "mse"),
                   "--loss: not used by --model rnn")
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 30)
    one_line_error(run_cli("train", "--model", "lstm", "--text", str(short), "--batch-size",
                           "64", "--block-size", "16"), "--batch-size")
    one_line_error(run_cli("diagram", "unrolled", "--model", "cnn"),
                   "the unrolled diagram draws recurrent layers")
    one_line_error(run_cli("explain", "--plot", str(tmp_path / "g.png")),
                   "--plot: draws the curves of --through-time")


# -- bad input ------------------------------------------------------------------------------


def test_bad_recurrent_input_gets_clear_errors(rng):
    with pytest.raises(ValueError, match="hidden"):
        LSTM(0)
    with pytest.raises(ValueError,
                       match="nonlinearity: unknown value 'sigmoid'; valid names are tanh, relu"):
        RNN(4, "sigmoid")
    with pytest.raises(ValueError, match=r"expects a sequence \(C, T\).*got input shape \(5,\)"):
        Network([LSTM(4), Dense(2)], loss="mse", input_shape=(5,))
    with pytest.raises(ValueError, match="cell"):
        models.char_rnn(5, 4, cell="transformer")
    net = char_model("lstm")
    X, _ = batch(rng, 3)
    with pytest.raises(ValueError, match="carry=True.*no forward pass was made"):
        net.forward(X, carry=True)
    net.forward(X)
    with pytest.raises(ValueError, match="carry=True.*had 3 sequences and X has 2"):
        net.forward(X[:, :2], carry=True)
    with pytest.raises(TypeError, match="carry: expected True or False"):
        net.forward(X, carry=1)
    ids = np.arange(30) % V
    with pytest.raises(ValueError, match="windows: unknown value 'shuffled'; valid names are "
                       "random, consecutive"):
        net.fit_text(ids, windows="shuffled", progress=False)
    with pytest.raises(ValueError, match="batch_size=8 streams.*at most 5"):
        net.fit_text(ids, windows="consecutive", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="no recurrent layer"):
        gradient_through_time(models.gpt(5, 4, 1, 1, 4, dtype="float64"),
                              np.zeros((4, 1), int), np.zeros((4, 1), int))
    with pytest.raises(ValueError, match=r"2 recurrent layers \(1 … 2\), got 3"):
        gradient_through_time(net, X, X, layer=3)
