"""The sequence models' workloads of ``loopprop bench``: GPT and char-level LSTM training
steps against the same models in PyTorch eager (seconds per step, :func:`best_step_time`),
causal attention and an LSTM layer forward + backward against ``scaled_dot_product_attention``,
``nn.LSTM`` and the lean NumPy LSTM (:func:`loopprop.bench.best_time`)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from . import vectorized as vec
from .bench_torch import torch_char_rnn, torch_gpt, torch_or_none


#: GPT configurations of the benchmarks: (n_layer, n_head, n_embd, block, batch, vocabulary)
GPTS = {"small": (4, 4, 128, 64, 16, 96), "gpt2": (12, 12, 768, 64, 4, 50257)}


def gpt_workload(config: str = "small", dtype: str = "float32", with_torch: bool = True,
                 steps: int = 10) -> dict[str, Callable[[], list]]:
    """``steps`` training steps (forward, backward, AdamW with clipping) of a GPT
    (:data:`GPTS`) on random windows of a random corpus: :meth:`Network.fit_text` against the
    same model in PyTorch eager (``torch.optim.AdamW``, ``foreach`` as its default).

    Each function returns the seconds of each of its steps. loopprop's are ``fit_text``'s
    epochs of one step each (``history["time"]``): a call's first step also touches the
    optimizer's moments for the first time (fresh pages: about 1 s for GPT-2 small's 1 GB), a
    cost PyTorch's optimizer pays once, in its first step ever, so :func:`best_step_time`
    leaves every call's first step out on both sides.

    Both models keep training from call to call. After about five steps of GPT-2 small,
    PyTorch's steps slow down 3-6x on this machine's CPU (1.5 s -> 5-9 s, measured; values go
    subnormal: with ``torch.set_flush_denormal(True)`` from the start they do not), while
    loopprop's do not; :func:`best_step_time` counts the steps of its warm-up call too, so that
    PyTorch's early, healthy steps set its best. (A fresh PyTorch model per call avoids the
    slowdown but its first ten steps run slower: 56 ms instead of 42 for the small GPT.)"""
    from .models import gpt

    n_layer, n_head, n_embd, block, batch, vocab = GPTS[config]
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, vocab, 100_000)
    net = gpt(vocab, block, n_layer, n_head, n_embd, dtype=dtype)

    return _fit_text_steps(net, lambda torch: torch_gpt(torch, vocab, block, n_layer, n_head,
                                                        n_embd),
                           corpus, block, batch, steps, dtype, 0.1, with_torch)


#: the char-level LSTM of the benchmarks: (n_layer, hidden, n_embd, block, batch, vocabulary)
CHAR_RNN = (2, 256, 64, 64, 32, 96)


def char_rnn_workload(dtype: str = "float32", with_torch: bool = True, steps: int = 10
                      ) -> dict[str, Callable[[], list]]:
    """``steps`` training steps (forward, backward through time, AdamW with clipping) of the
    char-level LSTM (:data:`CHAR_RNN`: 2 layers of 256, windows of 64, batch 32) on random
    windows of a random corpus: :meth:`Network.fit_text` against the same model in PyTorch
    eager (:func:`loopprop.bench_torch.torch_char_rnn`). Seconds per step, as
    :func:`gpt_workload`'s (for :func:`best_step_time`)."""
    from .models import char_rnn

    n_layer, hidden, n_embd, block, batch, vocab = CHAR_RNN
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, vocab, 100_000)
    net = char_rnn(vocab, hidden, n_layer, block_size=block, n_embd=n_embd, dtype=dtype)

    return _fit_text_steps(net, lambda torch: torch_char_rnn(torch, vocab, n_embd, hidden,
                                                             n_layer),
                           corpus, block, batch, steps, dtype, 0.01, with_torch)


def _fit_text_steps(net, torch_model, corpus, block: int, batch: int, steps: int, dtype: str,
                    weight_decay: float, with_torch: bool) -> dict[str, Callable[[], list]]:
    """``steps`` steps of ``net.fit_text`` (random windows, AdamW with clipping at 1, lr
    1e-4) and of the same steps in PyTorch eager (``torch_model(torch)`` its model), each
    function returning the seconds of each of its steps."""

    def loops() -> list:
        return net.fit_text(corpus, epochs=steps, steps_per_epoch=1, batch_size=batch,
                            lr=1e-4, weight_decay=weight_decay, warmup_epochs=0,
                            progress=False)["time"]

    fns: dict[str, Callable[[], list]] = {"loopprop": loops}
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        torch.manual_seed(0)
        model = torch_model(torch)
        if dtype == "float64":
            model = model.double()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                weight_decay=weight_decay)
        tc = torch.tensor(corpus)

        def torch_steps() -> list:
            seconds = []
            for _ in range(steps):
                t0 = time.perf_counter()
                starts = torch.randint(0, len(corpus) - block - 1, (batch,))
                ids = torch.stack([tc[s:s + block] for s in starts])
                tgt = torch.stack([tc[s + 1:s + block + 1] for s in starts])
                opt.zero_grad(set_to_none=True)
                model(ids, tgt).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                seconds.append(time.perf_counter() - t0)
            return seconds

        fns["torch"] = torch_steps
    return fns


def best_step_time(fns: dict[str, Callable[[], list]], rounds: int,
                   settle: float = 0.15) -> dict[str, float]:
    """Best seconds per step of functions that return the seconds of each of their steps
    (:func:`gpt_workload`), interleaved round by round, the warm-up call's steps included; each
    call's first step is left out (one-time costs: see :func:`gpt_workload`)."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds + 1):  # the first round warms up, and counts
        for name, f in fns.items():
            time.sleep(settle)  # as best_time: let the other side's threads go to sleep
            seconds = f()
            if len(seconds) < 2:
                raise ValueError("best_step_time needs at least two steps per call")
            best[name] = min(best[name], min(seconds[1:]))
    return best


def attention_workload(n_head: int = 12, d_head: int = 64, T: int = 256, m: int = 8,
                       dtype: str = "float32", with_torch: bool = True) -> dict[str, Callable]:
    """Causal attention forward + backward: loopprop's public functions (layout ``(n_head,
    d_head, T, m)``) against ``F.scaled_dot_product_attention(is_causal=True)`` and its
    autograd backward (layout ``(m, n_head, T, d_head)``)."""
    from .kernels.attention import attention_backward, attention_forward

    rng = np.random.default_rng(0)
    Q, K, V, dO = (rng.standard_normal((n_head, d_head, T, m)).astype(dtype) for _ in range(4))

    def loops():
        _, P = attention_forward(Q, K, V, check_finite=False)
        return attention_backward(dO, Q, K, V, P, causal=True, check_finite=False)

    fns: dict[str, Callable] = {"loopprop": loops}
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        def to_t(A, grad=True):
            return torch.tensor(np.ascontiguousarray(A.transpose(3, 0, 2, 1)),
                                requires_grad=grad)

        tQ, tK, tV, tdO = to_t(Q), to_t(K), to_t(V), to_t(dO, False)

        def torch_attention():
            tQ.grad = tK.grad = tV.grad = None
            torch.nn.functional.scaled_dot_product_attention(tQ, tK, tV,
                                                             is_causal=True).backward(tdO)

        fns["torch"] = torch_attention
    return fns


def lstm_workload(d: int = 128, n_h: int = 256, T: int = 64, m: int = 32,
                  dtype: str = "float32", with_torch: bool = True) -> dict[str, Callable]:
    """An LSTM layer's forward + backward through time: loopprop's tuned kernels (layout
    ``(d, T, m)``) against the lean NumPy LSTM (one product for every step's input projection,
    one per step for the recurrence: ``vectorized.lstm_forward``/``lstm_backward``) and
    ``nn.LSTM`` with its autograd backward (layout ``(T, m, d)``)."""
    from .kernels.recurrent import lstm_backward, lstm_forward

    rng = np.random.default_rng(0)
    W_x = (rng.standard_normal((4 * n_h, d)) / np.sqrt(d)).astype(dtype)
    W_h = (rng.standard_normal((4 * n_h, n_h)) / np.sqrt(n_h)).astype(dtype)
    b = np.zeros(4 * n_h, dtype)
    X = rng.standard_normal((d, T, m)).astype(dtype)
    dH = rng.standard_normal((n_h, T, m)).astype(dtype)
    zeros = np.zeros((n_h, m), dtype)

    def loops():
        H, _, cache = lstm_forward(W_x, W_h, b, X, check_finite=False)
        return lstm_backward(dH, cache, check_finite=False)

    def lean():
        H, C, G = vec.lstm_forward(W_x, W_h, b, X, zeros, zeros)
        return vec.lstm_backward(dH, W_x, W_h, X, zeros, zeros, H, C, G, zeros, zeros)

    fns: dict[str, Callable] = {"loopprop": loops, "numpy": lean}
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        mod = torch.nn.LSTM(d, n_h).to(torch.float32 if dtype == "float32" else torch.float64)
        with torch.no_grad():
            mod.weight_ih_l0[...] = torch.tensor(W_x)
            mod.weight_hh_l0[...] = torch.tensor(W_h)
        tX = torch.tensor(np.ascontiguousarray(X.transpose(1, 2, 0)), requires_grad=True)
        tdH = torch.tensor(np.ascontiguousarray(dH.transpose(1, 2, 0)))

        def torch_lstm():
            mod.zero_grad()
            tX.grad = None
            mod(tX)[0].backward(tdH)

        fns["torch"] = torch_lstm
    return fns
