"""The PyTorch twins of loopprop's networks, for the benchmarks and the oracle tests: a
:class:`~loopprop.Network` of the layers PyTorch has, rebuilt as an ``nn.Sequential`` (weights
copied on request), and the GPT in nanoGPT's structure. torch is a benchmark peer and a test
oracle only: these take the imported module as their first argument."""

from __future__ import annotations


def torch_or_none():
    """The ``torch`` module when it is installed, else ``None`` (the benchmarks' PyTorch rows
    are then left out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_twin(torch, net, dtype: str = "float64", copy_weights: bool = False):
    """The same network in PyTorch eager (``nn.Sequential``, examples first): the benchmark's
    peer and the tests' autograd oracle. A final ``Softmax`` is left out (PyTorch fuses it
    into ``cross_entropy``, as loopprop does); ``copy_weights`` copies loopprop's weights (and
    batch norm's running statistics) in. Returns ``(model, parameterized modules in the order
    of net.params)``."""
    nn = torch.nn
    weighted = []

    class Residual(nn.Module):
        """``x + body(x)``."""

        def __init__(self, body):
            super().__init__()
            self.body = nn.Sequential(*body)

        def forward(self, x):
            return x + self.body(x)

    def build(layers):
        mods = []
        for layer in layers:
            name = type(layer).__name__
            if name == "Conv2d":
                mods.append(nn.Conv2d(layer.c_in, layer.c_out, layer.kernel, layer.stride,
                                      layer.padding))
            elif name == "Dense":
                mods.append(nn.Linear(layer.n_in, layer.n_out))
            elif name in ("MaxPool2d", "AvgPool2d"):
                mods.append(getattr(nn, name)(layer.size, layer.stride))
            elif name == "LeakyReLU":
                mods.append(nn.LeakyReLU(layer.alpha))
            elif name == "GELUTanh":
                mods.append(nn.GELU(approximate="tanh"))
            elif name == "BatchNorm":
                kind = nn.BatchNorm1d if len(layer.in_shape) == 1 else nn.BatchNorm2d
                mods.append(kind(layer.channels, eps=layer.eps, momentum=layer.momentum))
            elif name == "LayerNorm":
                if len(layer.in_shape) != 1:
                    raise ValueError("torch_twin: LayerNorm on vectors only (PyTorch normalizes "
                                     "the last axis, loopprop the first)")
                mods.append(nn.LayerNorm(layer.features, eps=layer.eps))
            elif name == "Residual":
                mods.append(Residual(build(layer.layers)))
                continue
            elif name == "Softmax":
                continue
            else:
                mods.append(getattr(nn, name)())  # Flatten, ReLU, Tanh, Sigmoid, Identity, GELU
            if getattr(mods[-1], "weight", None) is not None:
                weighted.append(mods[-1])
        return mods

    model = nn.Sequential(*build(net.layers))
    model = model.to(torch.float64 if dtype == "float64" else torch.float32)
    if copy_weights:
        with torch.no_grad():
            for (W, b), mod in zip(net.params, weighted):
                mod.weight[...] = torch.tensor(W)
                mod.bias[...] = torch.tensor(b)
            for r, mod in zip(net.param_rows, weighted):  # batch norm's running statistics
                for name in net.rows[r].state_names:
                    getattr(mod, name)[...] = torch.tensor(getattr(net.rows[r], name))
    return model, weighted


def torch_gpt(torch, vocab: int, block: int, n_layer: int, n_head: int, n_embd: int):
    """The same GPT in PyTorch eager (nanoGPT's structure: pre-norm blocks, fused QKV,
    ``scaled_dot_product_attention``, tanh GELU, tied output layer)."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
            self.qkv, self.proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
            self.fc, self.out = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (a.view(B, T, n_head, C // n_head).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.lnf = nn.LayerNorm(n_embd)

        def forward(self, ids, targets):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for b in self.blocks:
                x = b(x)
            logits = self.lnf(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    return GPT()


def torch_char_rnn(torch, vocab: int, n_embd: int, hidden: int, n_layer: int):
    """The character-level LSTM of :func:`loopprop.models.char_rnn` in PyTorch eager: an
    embedding, ``nn.LSTM`` of ``n_layer`` layers (cuDNN's fused kernels have a CPU twin:
    one call for every layer and step), a linear output and the cross-entropy."""
    nn, F = torch.nn, torch.nn.functional

    class CharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, n_embd)
            self.lstm = nn.LSTM(n_embd, hidden, num_layers=n_layer, batch_first=True)
            self.out = nn.Linear(hidden, vocab)

        def forward(self, ids, targets):
            h, _ = self.lstm(self.wte(ids))
            logits = self.out(h)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    return CharRNN()


__all__ = ["torch_char_rnn", "torch_gpt", "torch_or_none", "torch_twin"]
