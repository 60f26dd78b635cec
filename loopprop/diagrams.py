"""Mermaid diagrams of backpropagation (docs/formulas.md §13–§14), drawn from a real
:class:`Network`.

Kinds:

* ``"workflow"`` — §13's backpropagation workflow, unrolled over this network's layers.
* ``"neuron"`` — §13's single neuron: forward to the loss, backward to dW and db.
* ``"network"`` — §13's forward and backward signals, with this network's layer sizes and
  activations.
* ``"cache"`` — §14: what the forward pass caches for each layer and where backward reads it.
* ``"unrolled"`` — a recurrent network unrolled over time steps (:mod:`loopprop.unrolled`),
  for networks holding an RNN, LSTM or GRU.

A network built from sizes and activation names (``Network([64, 32, 10], ["relu", "softmax"],
…)``) is drawn in the notation of docs/formulas.md (``Z`` and ``A`` per layer). Any other
network -- a CNN, or any list of layers -- is drawn one layer per node, with the formulas each
layer kind states (:meth:`loopprop.layers.base.Layer.formulas`): ``A1 … AL`` are the layers'
outputs.

Labels are quoted (``id["…"]``) so that sizes, primes and arrows in the text never collide with
Mermaid's syntax; the output renders on GitHub inside a ```` ```mermaid ```` block.
"""

from __future__ import annotations

import numpy as np

KINDS = ("workflow", "neuron", "network", "cache")
#: the kinds drawn only for some networks: ``"unrolled"`` needs a recurrent layer
RECURRENT_KINDS = ("unrolled",)


def _q(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _seed_text(net) -> str:
    L = net.n_layers
    if net.loss == "cross_entropy":
        return f"dZ{L} = (P − Y)/m, softmax + cross-entropy fused (§9)"
    if net.loss == "binary_cross_entropy":
        return f"dZ{L} = (σ(Z{L}) − Y)/m, sigmoid + BCE fused (§9)"
    return f"dA{L} = (A{L} − Y)/m, then dZ{L} = dA{L} ⊙ {net.activations[-1]}'(Z{L})"


def workflow(net) -> str:
    L = net.n_layers
    lines = ["flowchart TD", f"    start[{_q('Start with loss L = ' + net.loss)}] --> "
             f"seed[{_q(_seed_text(net))}]"]
    prev = "seed"
    for l in range(L, 0, -1):
        act = net.activations[l - 1]
        if l < L:
            node = f"dz{l}"
            lines.append(f"    {prev} --> {node}[{_q(f'dZ{l} = dA{l} ⊙ {act}′(Z{l})')}]")
            prev = node
        a_prev = "X" if l == 1 else f"A{l - 1}"
        lines.append(f"    {prev} --> dw{l}[{_q(f'dW{l} = dZ{l} · {a_prev}ᵀ')}]")
        lines.append(f"    {prev} --> db{l}[{_q(f'db{l} = sum of dZ{l} over the batch')}]")
        if l > 1:
            lines.append(f"    {prev} --> da{l - 1}[{_q(f'dA{l - 1} = W{l}ᵀ · dZ{l}')}]")
            prev = f"da{l - 1}"
    grads = " & ".join(f"dw{l} & db{l}" for l in range(1, L + 1))
    lines.append(f"    {grads} --> update[{_q('Update W ← W − η·dW and b ← b − η·db (§10)')}]")
    return "\n".join(lines)


def neuron(net) -> str:
    n0 = net.layer_sizes[0]
    act = net.activations[0]
    return "\n".join([
        "flowchart LR",
        f"    X[{_q(f'Input x, {n0} values')}] --> Z[{_q('z = Σ w_j·x_j + b')}]",
        f"    Z --> A[{_q(f'a = {act}(z)')}]",
        f"    A --> L[{_q('Loss L(a, y)')}]",
        f"    L --> dA[{_q('dL/da')}]",
        f"    dA --> dZ[{_q(f'dL/dz = dL/da · {act}′(z)')}]",
        f"    dZ --> dW[{_q('dL/dw_j = dL/dz · x_j')}]",
        f"    dZ --> dB[{_q('dL/db = dL/dz')}]",
    ])


def network(net) -> str:
    sizes, acts, L = net.layer_sizes, net.activations, net.n_layers
    lines = ["graph LR", f"    subgraph forward[{_q('Forward pass')}]",
             f"        x0[{_q(f'Input X: {sizes[0]} features')}]"]
    for l in range(1, L + 1):
        kind = "Output" if l == L else "Hidden"
        lines.append(f"        a{l}[{_q(f'{kind} A{l}: {sizes[l]} × {acts[l - 1]}')}]")
        lines.append(f"        {'x0' if l == 1 else f'a{l - 1}'} -->|{_q(f'W{l}, b{l}')}| a{l}")
    lines.append(f"        a{L} --> loss[{_q(f'Loss: {net.loss}')}]")
    lines += ["    end", f"    subgraph backward[{_q('Backward pass')}]",
              f"        dz{L}[{_q(_seed_text(net))}]"]
    for l in range(L, 0, -1):
        lines.append(f"        dz{l} --> dw{l}[{_q(f'dW{l} {sizes[l]}×{sizes[l - 1]}, db{l}')}]")
        if l > 1:
            lines.append(f"        dz{l} -->|{_q(f'W{l}ᵀ')}| da{l - 1}[{_q(f'dA{l - 1}')}]")
            lines.append(f"        da{l - 1} -->|{_q(f'⊙ {acts[l - 2]}′(Z{l - 1})')}| dz{l - 1}"
                         f"[{_q(f'dZ{l - 1}')}]")
    lines += ["    end", f"    loss --> dz{L}"]
    return "\n".join(lines)


def cache(net, batch_size: int | None = None) -> str:
    sizes, acts, L = net.layer_sizes, net.activations, net.n_layers
    lines = ["flowchart LR"]

    def mem(rows: int) -> str:  # a (rows, m) array's bytes for the batch, when one is given
        if batch_size is None:
            return ""
        return f": {_bytes(rows * batch_size * net.dtype.itemsize)} for m = {batch_size:,}"

    for l in range(1, L + 1):
        a_prev = "X" if l == 1 else f"A{l - 1}"
        lines += [
            f"    subgraph layer{l}"
            f"[{_q(f'Layer {l}: {sizes[l - 1]} → {sizes[l]}, {acts[l - 1]}')}]",
            f"        c{l}a[{_q(f'{a_prev} cached, {sizes[l - 1]} × m{mem(sizes[l - 1])}')}]",
            f"        c{l}a --> z{l}[{_q(f'Z{l} = W{l}·{a_prev} + b{l}, cached{mem(sizes[l])}')}]",
            f"        z{l} --> a{l}[{_q(f'A{l} = {acts[l - 1]}(Z{l}), cached{mem(sizes[l])}')}]",
            f"        dz{l}[{_q(f'Error signal dZ{l}')}] --> "
            f"dw{l}[{_q(f'dW{l} = dZ{l}·{a_prev}ᵀ')}]",
            f"        dz{l} --> db{l}[{_q(f'db{l} = sum of dZ{l}')}]",
            f"        c{l}a -.->|{_q('read by backward')}| dw{l}",
            "    end",
        ]
        if l > 1:
            lines.append(f"    a{l - 1} --> c{l}a")
            lines.append(f"    dz{l} -->|{_q(f'W{l}ᵀ·dZ{l}, then ⊙ f′(Z{l - 1})')}| dz{l - 1}")
        lines.append(f"    z{l} -.->|{_q('Z and A read for the activation derivative')}| dz{l}")
    lines.insert(1, f"    loss[{_q('Loss L')}] --> dz{L}")
    lines.append(f"    a{L} --> loss")
    return "\n".join(lines)


# -- any stack of layers ----------------------------------------------------------------------


def _names(net) -> list[str]:
    """``X, A1, …, AL``: the input and every layer's output."""
    return ["X"] + [f"A{l}" for l in range(1, len(net.rows) + 1)]


def _shape(shape) -> str:
    return "×".join(str(v) for v in shape)


def _layer_seed(net) -> tuple[int, str]:
    """The last layer the backward pass runs through, and the seed's text."""
    L = len(net.rows)
    names = _names(net)
    if net.loss == "cross_entropy":
        return L - 1, f"d{names[L - 1]} = (softmax({names[L - 1]}) − Y)/m: fused (§9)"
    if net.loss == "binary_cross_entropy":
        return L - 1, f"d{names[L - 1]} = (σ({names[L - 1]}) − Y)/m: fused (§9)"
    return L, f"d{names[L]} = ({names[L]} − Y)/m"


def _formulas(net, l: int) -> dict:
    """Row ``l``'s formulas in the diagram's names (a residual row also names its skip)."""
    names = _names(net)
    layer = net.rows[l - 1]
    extra = {}
    source = getattr(layer, "skip_source", None)
    if source is not None:
        extra["skip"] = names[next(r for r, v in enumerate(net.rows) if v is source)]
    return layer.formulas(names[l - 1], names[l], l, **extra)


def _label(net, l: int) -> str:
    """The forward node of row ``l``: its name and layer, or a residual row's sum."""
    layer = net.rows[l - 1]
    if getattr(layer, "skip_source", None) is not None:
        return _formulas(net, l)["forward"]
    return f"{_names(net)[l]} = {layer!r}"


def _backward(net, l: int) -> list[str]:
    """Layer ``l``'s backward formulas as the pass runs them: the first layer's input is the
    data, whose gradient is not computed; a softmax or sigmoid fused with the loss is skipped."""
    if l == len(net.rows) and net.loss != "mse":
        return [_layer_seed(net)[1]]
    back = _formulas(net, l)["backward"]
    return back[:-1] if l == 1 and len(back) > 1 else back


def _skip_row(net, l: int) -> int | None:
    """For a residual row ``l``: the row whose output is the block's input (0: the input)."""
    source = getattr(net.rows[l - 1], "skip_source", None)
    if source is None:
        return None
    return next(r for r, v in enumerate(net.rows) if v is source)


def layers_network(net) -> str:
    """Forward and backward pass, one node per layer; a residual block's skip path as its own
    edge (forward: the block's input into the sum; backward: the sum's gradient back into the
    input's), attention's Q, K and V as three paths."""
    L = len(net.rows)
    lines = ["graph LR", f"    subgraph forward[{_q('Forward pass')}]",
             f"        a0[{_q(f'Input X: {_shape(net.input_shape)} per example')}]"]
    for l, layer in enumerate(net.rows, 1):
        lines.append(f"        a{l}[{_q(f'{_label(net, l)}: {_shape(layer.out_shape)}')}]")
        paths = _formulas(net, l).get("paths")
        if paths:
            for node, label, reads in paths["forward"]:
                lines.append(f"        a{l}{node}[{_q(label)}]")
                lines += [f"        {f'a{l - 1}' if r == 'in' else f'a{l}{r}'} --> a{l}{node}"
                          for r in reads]
            lines.append(f"        a{l}{paths['forward'][-1][0]} --> a{l}")
        else:
            lines.append(f"        a{l - 1} --> a{l}")
        skip = _skip_row(net, l)
        if skip is not None and skip != l - 1:
            lines.append(f"        a{skip} -.->|{_q('skip path')}| a{l}")
    lines.append(f"        a{L} --> loss[{_q(f'Loss: {net.loss}')}]")
    last, seed = _layer_seed(net)
    lines += ["    end", f"    subgraph backward[{_q('Backward pass')}]",
              f"        g{last}[{_q(seed)}]"]
    for l in range(last, 0, -1):
        layer = net.rows[l - 1]
        back = _backward(net, l)
        paths = _formulas(net, l).get("paths") if l < len(net.rows) else None
        if paths:
            for node, label, reads in paths["backward"]:
                for r in reads:
                    src = f"g{l}" if r == "in" else f"g{l}{r}"
                    lines.append(f"        {src} --> g{l}{node}[{_q(label)}]")
            into = paths["backward_into"] if l > 1 else paths["backward_into"][:-1]
            ends = [node for node, _, _ in paths["backward"]
                    if not any(node in reads for _, _, reads in paths["backward"])]
            lines.append(f"        g{l}{ends[0]} --> g{l - 1}[{_q('; '.join(into))}]")
            lines += [f"        g{l}{node} --> g{l - 1}" for node in ends[1:]]
        else:
            lines.append(f"        g{l} -->|{_q(type(layer).__name__)}| g{l - 1}"
                         f"[{_q('; '.join(back))}]")
        skip = _skip_row(net, l)
        if skip is not None and skip != l - 1:
            lines.append(f"        g{l} -.->|{_q('skip path')}| g{skip}")
    lines += ["    end", f"    loss --> g{last}"]
    return "\n".join(lines)


def layers_workflow(net) -> str:
    last, seed = _layer_seed(net)
    lines = ["flowchart TD", f"    start[{_q('Start with loss L = ' + net.loss)}] --> "
             f"seed[{_q(seed)}]"]
    prev, grads = "seed", []
    for l in range(last, 0, -1):
        back = _formulas(net, l)["backward"]
        for n, text in enumerate(back[:-1]):  # parameter gradients
            lines.append(f"    {prev} --> p{l}_{n}[{_q(text)}]")
            grads.append(f"p{l}_{n}")
        if l > 1:
            lines.append(f"    {prev} --> d{l}[{_q(back[-1])}]")
            prev = f"d{l}"
    if grads:
        lines.append(f"    {' & '.join(grads)} --> update"
                     f"[{_q('Update every parameter: θ ← θ − η·dθ (§10)')}]")
    return "\n".join(lines)


def layers_neuron(net) -> str:
    first = net.rows[0]
    act = net.rows[1].function if len(net.rows) > 1 and hasattr(net.rows[1], "function") \
        else "identity"
    if first.kernels[0].startswith("conv."):
        z = "z = Σ_c,p,q w[c, p, q]·x[c, y + p, x + q] + b: one output pixel"
        dw = "dL/dw[c, p, q] = dL/dz · x[c, y + p, x + q]"
        inputs = (f"Input x: a {_shape(first.kernel)} window of {first.c_in} channel"
                  + ("s" if first.c_in > 1 else ""))
    else:
        n0 = int(np.prod(net.input_shape))
        z, dw, inputs = "z = Σ w_j·x_j + b", "dL/dw_j = dL/dz · x_j", f"Input x, {n0} values"
    return "\n".join([
        "flowchart LR",
        f"    X[{_q(inputs)}] --> Z[{_q(z)}]",
        f"    Z --> A[{_q(f'a = {act}(z)')}]",
        f"    A --> L[{_q('Loss L(a, y)')}]",
        f"    L --> dA[{_q('dL/da')}]",
        f"    dA --> dZ[{_q(f'dL/dz = dL/da · {act}′(z)')}]",
        f"    dZ --> dW[{_q(dw)}]",
        f"    dZ --> dB[{_q('dL/db = dL/dz')}]",
    ])


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _memory(values: int, nbytes: int, batch_size: int | None) -> str:
    """``values`` per example (``nbytes`` bytes), and the bytes for a batch when
    ``batch_size`` is given."""
    text = f"{values:,} values per example"
    if batch_size is not None:
        text += f", {_bytes(nbytes * batch_size)} for a batch of {batch_size:,}"
    return text


def layers_cache(net, batch_size: int | None = None) -> str:
    """What each layer's forward pass keeps for its backward pass, and how much: its output
    (in the activation buffer, read by the next layer's backward pass) and its own cache
    (docs/formulas.md §14)."""
    lines = ["flowchart LR"]
    item = net.dtype.itemsize
    for l, layer in enumerate(net.rows, 1):
        f = _formulas(net, l)
        title = "Residual: the sum of two paths" if getattr(layer, "skip_source", None) \
            else repr(layer)
        out = int(np.prod(layer.out_shape))
        forward = f"{f['forward']} — output {_memory(out, out * item, batch_size)}"
        lines += [f"    subgraph layer{l}[{_q(f'Layer {l}: {title}')}]",
                  f"        f{l}[{_q(forward)}]"]
        f["backward"] = _backward(net, l)
        if f["cache"]:
            own = layer.cache_size + layer.icache_size
            nbytes = layer.cache_size * item + layer.icache_size * 4  # int32 winners
            size = (f" — {_memory(own, nbytes, batch_size)}" if own
                    else " — read from the activation buffer")
            lines += [f"        f{l} -.->|{_q('cached')}| c{l}[{_q(f['cache'] + size)}]",
                      f"        c{l} -.->|{_q('read by backward')}| b{l}"]
        lines += [f"        b{l}[{_q('; '.join(f['backward']))}]", "    end"]
        if l > 1:
            lines += [f"    f{l - 1} --> f{l}", f"    b{l} --> b{l - 1}"]
    L = len(net.rows)
    lines += [f"    f{L} --> loss[{_q('Loss L')}]", f"    loss --> b{L}"]
    return "\n".join(lines)


def to_mermaid(net, kind: str = "network", batch_size: int | None = None) -> str:
    """Mermaid source for ``kind`` in workflow, neuron, network, cache (docs/formulas.md §14),
    or unrolled (a recurrent network over its time steps):
    in the notation of docs/formulas.md for a network built from sizes, one node per layer for
    any other. ``batch_size`` adds to the cache diagram the memory each cache takes for a batch
    of that size."""
    if batch_size is not None:
        from . import _checks

        _checks.check_positive_int(batch_size, "batch_size")
    if net.layer_sizes is not None:
        builders = {"workflow": workflow, "neuron": neuron, "network": network, "cache": cache}
    else:
        builders = {"workflow": layers_workflow, "neuron": layers_neuron,
                    "network": layers_network, "cache": layers_cache}
    if kind == "unrolled":
        from .unrolled import unrolled

        return unrolled(net)
    if kind not in builders:
        raise ValueError(f"kind: unknown diagram {kind!r}; valid kinds are "
                         f"{', '.join(KINDS + RECURRENT_KINDS)}")
    if kind == "cache":
        return builders[kind](net, batch_size)
    return builders[kind](net)
