"""Normalization and residual layers in networks, and the optimizers people train with.

Residual blocks with batch norm and with layer norm against the same models in PyTorch (one
training step, every gradient by name; evaluation mode after a few steps, running statistics);
AdamW and momentum with weight decay, clipping and schedules against ``torch.optim``; fit
against the Python loop; bitwise reproducibility; save/load of the running statistics; gradcheck
in both modes; clear errors.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from helpers import assert_close, python_loop, torch_or_skip

import loopprop as lp
from loopprop.bench import torch_twin
from loopprop.layers import (GELU, BatchNorm, Conv2d, Dense, Dropout, Flatten, LayerNorm,
                             MaxPool2d, ReLU, Residual, Softmax, Tanh)


def bn_resnet():
    """A residual CNN with batch norm: conv → BN → ReLU → [conv → BN → ReLU → conv → BN] + x →
    ReLU → pool → flatten → dense → BN (1-D) → tanh → dense → softmax."""
    return [Conv2d(4, 3, padding=1), BatchNorm(), ReLU(),
            Residual([Conv2d(4, 3, padding=1), BatchNorm(), ReLU(), Conv2d(4, 3, padding=1),
                      BatchNorm()]),
            ReLU(), MaxPool2d(2), Flatten(), Dense(6), BatchNorm(momentum=0.3), Tanh(), Dense(3),
            Softmax()]


def ln_resnet():
    """Residual MLP blocks with layer norm (pre-norm, as GPT): x + W2·gelu(W1·LN(x))."""
    return [Dense(8), Residual([LayerNorm(), Dense(12), GELU(), Dense(8)]),
            Residual([LayerNorm(), Dense(8), Tanh()]), LayerNorm(), Dense(3), Softmax()]


NETS = {"batchnorm": (bn_resnet, (2, 6, 6)), "layernorm": (ln_resnet, (5,))}


def make(name, seed=0, dtype="float64"):
    layers, shape = NETS[name]
    return lp.Network(layers(), loss="cross_entropy", input_shape=shape, seed=seed, dtype=dtype)


def data(rng, name, m):
    shape = NETS[name][1]
    return rng.standard_normal((*shape, m)), rng.integers(0, 3, m)


def to_torch(torch, X):
    return torch.tensor(np.ascontiguousarray(np.moveaxis(X, -1, 0)))


def perturb(rng, net):
    """Move γ, β and biases away from 1 and 0, so that every gradient path is exercised."""
    for arrays in net.params:
        for a in arrays:
            a += 0.3 * rng.standard_normal(a.shape)


@pytest.mark.parametrize("name", ["batchnorm", "layernorm"])
def test_residual_step_matches_torch_gradient_by_gradient(rng, name):
    torch = torch_or_skip()
    net = make(name, seed=1)
    perturb(rng, net)
    X, y = data(rng, name, 7)
    model, mods = torch_twin(torch, net, copy_weights=True)
    model.train()
    net.zero_grad()
    P = net.forward(X)
    loss = net.backward(y)
    out = model(to_torch(torch, X))
    tl = torch.nn.functional.cross_entropy(out, torch.tensor(y))
    tl.backward()
    assert abs(loss - tl.item()) <= 1e-12 * abs(tl.item())
    assert_close("P", P, torch.softmax(out, 1).detach().numpy().T, 1e-10)
    for l, (grads, mod, row) in enumerate(zip(net.grads, mods, net.param_rows), 1):
        layer = net.rows[row]
        # a bias followed by batch norm has a gradient of exactly 0 (the mean is removed):
        # both sides then hold rounding noise, measured against the layer's weight gradient
        floor = float(np.abs(mod.weight.grad.numpy()).max())
        for gname, g, ref in zip(layer.param_names, grads, (mod.weight.grad, mod.bias.grad)):
            err = float(np.abs(g - ref.numpy()).max())
            assert err <= 1e-10 * max(float(np.abs(ref.numpy()).max()), floor), (
                f"d{gname} of {layer!r} (parameterized layer {l}): {g} vs {ref.numpy()}")
    # one SGD step: the weights agree too, and so do the running statistics
    net.step(0.1)
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    for (arrays, mod) in zip(net.params, mods):
        assert_close("W after a step", arrays[0], mod.weight.detach().numpy(), 1e-10)
    for layer, mod in _batchnorms(net, mods):
        assert_close("running_mean", layer.running_mean, mod.running_mean.numpy(), 1e-10)
        assert_close("running_var", layer.running_var, mod.running_var.numpy(), 1e-10)


def _batchnorms(net, mods):
    return [(net.rows[r], mod) for r, mod in zip(net.param_rows, mods)
            if isinstance(net.rows[r], BatchNorm)]


def test_evaluation_mode_matches_torch_eval_after_training_steps(rng):
    torch = torch_or_skip()
    net = make("batchnorm", seed=2)
    model, mods = torch_twin(torch, net, copy_weights=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    X, y = data(rng, "batchnorm", 24)
    net.fit(X, y, epochs=3, batch_size=8, lr=0.05, shuffle=False, progress=False)
    tX, ty = to_torch(torch, X), torch.tensor(y)
    model.train()
    for _ in range(3):
        for s in range(0, 24, 8):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(tX[s:s + 8]), ty[s:s + 8]).backward()
            opt.step()
    assert len(_batchnorms(net, mods)) == 4
    for layer, mod in _batchnorms(net, mods):
        assert_close("running_mean", layer.running_mean, mod.running_mean.numpy(), 1e-10)
        assert_close("running_var", layer.running_var, mod.running_var.numpy(), 1e-10)
        assert not np.allclose(layer.running_var, 1.0)  # they moved
    model.eval()
    Xt, _ = data(rng, "batchnorm", 5)
    ref = torch.softmax(model(to_torch(torch, Xt)), 1).detach().numpy().T
    assert_close("predict (evaluation mode)", net.predict(Xt), ref, 1e-10)
    # forward in evaluation mode is the same computation, and backward differentiates it
    net.eval()
    assert_close("forward in eval mode", net.forward(Xt), ref, 1e-10)
    net.zero_grad()
    loss = net.backward(y[:5])
    out = model(to_torch(torch, Xt))
    model.zero_grad()
    torch.nn.functional.cross_entropy(out, torch.tensor(y[:5])).backward()
    assert abs(loss - torch.nn.functional.cross_entropy(out, torch.tensor(y[:5])).item()) < 1e-12
    for (grads, mod) in zip(net.grads, mods):
        assert_close("eval-mode gradient", grads[0], mod.weight.grad.numpy(), 1e-10)
    # a batch of one is fine in evaluation mode
    assert net.forward(Xt[..., :1]).shape == (3, 1)


@pytest.mark.parametrize("name", [
    # ~500 parameters through convolutions: 50 s each in plain Python (NUMBA_DISABLE_JIT)
    pytest.param("batchnorm", marks=pytest.mark.heavy), "layernorm"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck_in_both_modes(rng, name, mode):
    net = make(name, seed=3)
    perturb(rng, net)
    X, y = data(rng, name, 6)
    if name == "batchnorm":  # give the running statistics values of their own
        net.fit(X, y, epochs=1, batch_size=3, lr=0.01, progress=False)
    net.train(mode == "train")
    state = net.flat_state.copy()
    assert lp.gradcheck(net, X, y) < 1e-6
    np.testing.assert_array_equal(net.flat_state, state)  # restored


@pytest.mark.parametrize("name", ["batchnorm", "layernorm"])
def test_fit_equals_the_python_loop_of_steps(rng, name):
    X, y = data(rng, name, 23)
    a, b = make(name, seed=4), make(name, seed=4)
    a.fit(X, y, epochs=2, batch_size=6, lr=0.05, shuffle=False, progress=False)
    python_loop(b, X, y, 2, 6, 0.05)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.flat_state, b.flat_state, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["batchnorm", "layernorm"])
def test_same_seed_same_bits_on_any_thread_count(rng, name):
    X, y = data(rng, name, 40)
    runs = []
    saved = numba.get_num_threads()
    try:
        for threads in (1, saved, 1):
            numba.set_num_threads(threads)
            net = make(name, seed=5)
            net.fit(X, y, epochs=2, batch_size=8, lr=0.05, progress=False, seed=7,
                    optimizer="adamw", clip_grad_norm=1.0, lr_schedule="cosine",
                    warmup_epochs=1)
            runs.append(np.concatenate([net.flat_params, net.flat_state]))
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_save_and_load_round_trip_running_statistics_bitwise(rng, tmp_path):
    net = make("batchnorm", seed=6)
    X, y = data(rng, "batchnorm", 16)
    net.fit(X, y, epochs=2, batch_size=4, lr=0.05, progress=False)
    path = tmp_path / "resnet.npz"
    net.save(path)
    back = lp.Network.load(path)
    np.testing.assert_array_equal(back.flat_params, net.flat_params)
    np.testing.assert_array_equal(back.flat_state, net.flat_state)
    assert [repr(v) for v in back.layers] == [repr(v) for v in net.layers]
    assert isinstance(back.layers[3], Residual) and len(back.layers[3].layers) == 5
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    for layer in back.rows:
        if isinstance(layer, BatchNorm):
            assert not np.allclose(layer.running_var, 1.0)


def test_a_file_with_damaged_state_is_refused(rng, tmp_path):
    import json

    net = make("batchnorm")
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"][()]))
        theta = saved["theta"]
    for state, pattern in ((np.ones(3), "stored state: shape"),
                           (np.full(net.flat_state.size, np.nan), "state contains NaN")):
        bad = tmp_path / "bad.npz"
        np.savez(bad, meta=np.array(json.dumps(meta)), theta=theta, state=state)
        with pytest.raises(lp.ModelFileError, match=pattern):
            lp.Network.load(bad)
    bad = tmp_path / "nostate.npz"
    np.savez(bad, meta=np.array(json.dumps(meta)), theta=theta)
    with pytest.raises(lp.ModelFileError, match="without its state"):
        lp.Network.load(bad)


# -- optimizers ------------------------------------------------------------------------------


def _schedule(t, W, T, kind, step=None, gamma=0.1):
    """The documented schedule, written independently of the kernel."""
    if t < W:
        return (t + 1) / W
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
    if kind == "step":
        return gamma ** ((t - W) // step)
    return 1.0


def _torch_run(torch, net, X, y, bs, steps, make_opt, clip=None, lam=lambda t: 1.0):
    model, mods = torch_twin(torch, net, copy_weights=True)
    decay, no_decay = [], []
    for mod in mods:
        (decay if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) else no_decay).append(
            mod.weight)
        no_decay.append(mod.bias)
    opt = make_opt([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    tX, ty = to_torch(torch, X), torch.tensor(y)
    n = X.shape[-1]
    for t in range(steps):
        s = (t * bs) % n
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tX[s:s + bs]), ty[s:s + bs]).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
    return mods


def _compare(net, mods, rtol=1e-10):
    """Every parameter against torch's. A bias that feeds batch norm has a gradient of exactly
    0 and both sides step on rounding noise (Adam scales it up to ~1e-11): biases are measured
    against the size of their layer's weights."""
    for l, (arrays, mod) in enumerate(zip(net.params, mods), 1):
        W, b = mod.weight.detach().numpy(), mod.bias.detach().numpy()
        assert_close(f"weights of layer {l}", arrays[0], W, rtol)
        err = float(np.abs(arrays[1] - b).max())
        assert err <= rtol * max(float(np.abs(b).max()), float(np.abs(W).max())), (
            f"biases of layer {l}: {arrays[1]} vs {b}")


@pytest.mark.parametrize("name", ["batchnorm", "layernorm"])
def test_ten_adamw_steps_equal_torch(rng, name):
    torch = torch_or_skip()
    net = make(name, seed=7)
    X, y = data(rng, name, 50)
    # the convolutions' biases feed batch norm: their gradients are rounding noise (~1e-17),
    # which Adam divides by √v + ε; ε = 1e-4 keeps that noise below the comparison's 1e-10
    eps = 1e-4 if name == "batchnorm" else 1e-7
    mods = _torch_run(torch, net, X, y, 5, 10, lambda groups: torch.optim.AdamW(
        groups, lr=0.01, betas=(0.8, 0.99), eps=eps, weight_decay=0.05))
    hist = net.fit(X, y, epochs=1, batch_size=5, lr=0.01, optimizer="adamw", beta1=0.8,
                   beta2=0.99, eps=eps, weight_decay=0.05, shuffle=False, progress=False)
    assert hist["lr"] == [0.01]
    _compare(net, mods)


def test_ten_momentum_steps_with_decay_clipping_and_cosine_warmup_equal_torch(rng):
    torch = torch_or_skip()
    net = make("batchnorm", seed=8)
    X, y = data(rng, "batchnorm", 25)
    # 2 epochs of 5 batches: 10 steps, the first 2 warming up (0.4 epochs), then cosine
    lam = lambda t: _schedule(t, 2, 10, "cosine")  # noqa: E731
    mods = _torch_run(torch, net, X, y, 5, 10, lambda groups: torch.optim.SGD(
        groups, lr=0.1, momentum=0.9, weight_decay=1e-3), clip=0.5, lam=lam)
    hist = net.fit(X, y, epochs=2, batch_size=5, lr=0.1, optimizer="momentum", momentum=0.9,
                   weight_decay=1e-3, clip_grad_norm=0.5, lr_schedule="cosine",
                   warmup_epochs=0.4, shuffle=False, progress=False)
    _compare(net, mods)
    assert hist["lr"][0] == pytest.approx(0.1 * lam(4), rel=1e-12)
    assert hist["lr"][1] == pytest.approx(0.1 * lam(9), rel=1e-12)


def test_step_schedule_and_adam_with_l2_equal_torch(rng):
    torch = torch_or_skip()
    net = make("layernorm", seed=9)
    X, y = data(rng, "layernorm", 12)
    lam = lambda t: _schedule(t, 0, 12, "step", step=4, gamma=0.5)  # noqa: E731
    mods = _torch_run(torch, net, X, y, 3, 12, lambda groups: torch.optim.Adam(
        groups, lr=0.01, weight_decay=0.01), lam=lam)
    net.fit(X, y, epochs=3, batch_size=3, lr=0.01, optimizer="adam", weight_decay=0.01,
            lr_schedule="step", step_epochs=1, lr_gamma=0.5, shuffle=False, progress=False)
    _compare(net, mods)


def test_schedule_kernel_matches_torch_schedulers():
    """The compiled rate against PyTorch's own schedulers: warm-up + cosine
    (``SequentialLR`` of ``LambdaLR`` and ``CosineAnnealingLR``) and ``StepLR``."""
    torch = torch_or_skip()
    from loopprop.kernels.optim import COSINE, STEP, _scheduled_lr

    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=0.3)
    W, T = 3, 20
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / W)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T - W)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[W])
    for t in range(T):
        assert _scheduled_lr(COSINE, 0.3, t, W, T, 1, 0.1) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), t
        opt.step()
        sched.step()
    opt = torch.optim.SGD(p, lr=0.3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    for t in range(T):
        assert _scheduled_lr(STEP, 0.3, t, 0, T, 4, 0.5) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12), t
        opt.step()
        sched.step()


def test_weight_decay_spares_biases_and_normalization_unless_asked(rng):
    net = make("batchnorm")

    def mask_of(spans):
        m = np.zeros(net.flat_params.size)
        for lo, hi in spans:
            m[lo:hi] = 1.0
        return m

    spans = net._decay_spans(False)
    assert spans.dtype == np.int64 and (np.diff(spans.ravel()) > 0).all()  # sorted, merged
    mask = mask_of(spans)
    for r, arrays in zip(net.param_rows, net.params):
        off = int(net.plan[r, lp.plan.P_OFF])
        layer = net.rows[r]
        w = arrays[0].size
        expect_w = 0.0 if isinstance(layer, BatchNorm) else 1.0
        assert (mask[off:off + w] == expect_w).all(), layer
        assert (mask[off + w:off + w + arrays[1].size] == 0.0).all(), layer
    assert net._decay_spans(True).tolist() == [[0, net.flat_params.size]]
    # targets equal to the outputs: the loss's gradient is 0, so one SGD step with weight
    # decay shrinks exactly the decayed arrays by (1 − ηλ) and leaves the others alone
    mlp = lp.Network([Dense(3), LayerNorm(), Dense(2), lp.layers.Identity()], loss="mse",
                     input_shape=(4,))
    X = rng.standard_normal((4, 6))
    Y = mlp.predict(X)
    before = [tuple(a.copy() for a in arrays) for arrays in mlp.params]
    mlp.fit(X, Y, epochs=1, batch_size=6, lr=0.5, weight_decay=0.1, progress=False)
    after = mlp.params
    np.testing.assert_allclose(after[0][0], before[0][0] * (1 - 0.5 * 0.1), rtol=1e-12)
    np.testing.assert_array_equal(after[0][1], before[0][1])  # bias
    np.testing.assert_array_equal(after[1][0], before[1][0])  # LayerNorm gamma
    np.testing.assert_allclose(after[2][0], before[2][0] * (1 - 0.5 * 0.1), rtol=1e-12)


# -- structure and errors --------------------------------------------------------------------


def test_summary_shows_the_block_and_its_skip():
    text = make("batchnorm").summary(print_it=False)
    assert "  Conv2d(" in text and "Residual: + input of row 4" in text
    assert "norm._batchnorm_forward" in text and "residual._residual_forward" in text
    rows = make("layernorm").rows
    assert [type(r).__name__ for r in rows][:6] == ["Dense", "LayerNorm", "Dense", "GELU",
                                                   "Dense", "Residual"]


def test_an_empty_residual_doubles_its_input(rng):
    """out = x + x: the skip path and the branch are one region, and the gradient arrives
    twice (accumulation, not overwrite)."""
    net = lp.Network([Dense(3), Residual([]), lp.layers.Identity()], loss="mse",
                     input_shape=(2,))
    X = rng.standard_normal((2, 4))
    W, b = net.params[0]
    np.testing.assert_allclose(net.predict(X), 2 * (W @ X + b[:, None]), rtol=1e-14)
    assert lp.gradcheck(net, X, rng.standard_normal((3, 4))) < 1e-6


def test_bad_input_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"Residual: the branch must keep the shape"):
        lp.Network([Dense(4), Residual([Dense(3)]), Dense(2), Softmax()], loss="cross_entropy",
                   input_shape=(4,))
    with pytest.raises(TypeError, match="Residual: layers must be layer objects"):
        Residual([Dense(3), "relu"])
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(eps=0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(momentum=0)
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(eps=-1.0)
    net = make("layernorm")
    X, y = data(rng, "layernorm", 10)
    kw = {"epochs": 2, "progress": False}
    with pytest.raises(ValueError, match="weight_decay"):
        net.fit(X, y, weight_decay=-0.1, **kw)
    with pytest.raises(ValueError, match="warmup_epochs: the warm-up .* must be shorter"):
        net.fit(X, y, lr_schedule="cosine", warmup_epochs=2, **kw)
    with pytest.raises(ValueError, match="lr_schedule: unknown value 'linear'"):
        net.fit(X, y, lr_schedule="linear", **kw)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        net.fit(X, y, clip_grad_norm=0.0, **kw)
    with pytest.raises(ValueError, match="optimizer: unknown value"):
        net.fit(X, y, optimizer="lamb", **kw)
    bn = lp.Network([Dense(4), BatchNorm(), Dense(2), Softmax()], loss="cross_entropy",
                    input_shape=(3,))
    X, y = rng.standard_normal((3, 9)), rng.integers(0, 2, 9)
    with pytest.raises(ValueError, match=r"the last batch \(9 examples, batch_size 4\)"):
        bn.fit(X, y, batch_size=4, **kw)
    with pytest.raises(ValueError, match="batch_size: a batch of 1 example"):
        bn.fit(X, y, batch_size=1, **kw)
    with pytest.raises(ValueError, match="X: a batch of 1 example .* net.eval()"):
        bn.forward(X[:, :1])
    theta = bn.flat_params.copy()
    bn.fit(X, y, batch_size=3, **kw)  # 9 = 3·3: fine
    assert not np.array_equal(bn.flat_params, theta)
    # dropout in evaluation mode: its backward is the identity's
    dn = lp.Network([Dense(4), Dropout(0.5), Dense(2), Softmax()], loss="cross_entropy",
                    input_shape=(3,)).eval()
    assert lp.gradcheck(dn, X, y) < 1e-6
