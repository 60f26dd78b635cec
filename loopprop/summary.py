"""``Network.summary``: one row per layer (kind, output shape, parameters, what its backward
pass caches), the kernels each kind runs, and the memory of a batch's activations and caches."""

from __future__ import annotations

from . import _checks


def _short_repr(layer) -> str:
    """``Conv2d(c_out=16, kernel=3, stride=1, padding=1)``: a layer's repr with an ``(h, w)``
    pair of equal sides written once (for summary's table)."""
    def value(v):
        if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
            return repr(v[0])
        return repr(v)

    args = ", ".join(f"{k}={value(v)}" for k, v in layer.config().items())
    return f"{type(layer).__name__}({args})"


def summary(net, batch_size: int | None = None) -> str:
    """One row per layer: kind, output shape (per example), parameters and the values its
    backward pass needs beyond the activation buffer (per example: docs/formulas.md, "What
    each layer caches"); then, once per kind, the forward and backward kernels it runs.
    With ``batch_size``, two last lines give the memory of a batch of that size (activations,
    their gradients, caches, workspaces) and of training in all (parameters, gradients, the
    optimizer's state, the batch's buffers). At most 100 columns."""
    if batch_size is not None:
        _checks.check_positive_int(batch_size, "batch_size")
    rows = [("#", "layer", "output", "params", "cache/example"),
            ("", "input", str(net.input_shape), "", "")]
    index = {id(row): r for r, row in enumerate(net.rows)}
    kernels: dict[str, tuple[str, str]] = {}

    def walk(layers, depth):  # rows in plan order, with their nesting in residual blocks
        for layer in layers:
            inner = getattr(layer, "layers", None)
            if inner is not None:
                yield from walk(inner, depth + 1)
            yield layer, depth

    for layer, depth in walk(net.layers, 0):
        r = index[id(layer)]
        name = _short_repr(layer)
        if getattr(layer, "skip_source", None) is not None:
            src = index[id(layer.skip_source)]
            name = f"Residual: + input of row {src + 1}" if src != r else \
                "Residual: + its input"
        parts = [f"{layer.cache_size:,}"] if layer.cache_size else []
        if layer.icache_size:
            parts.append(f"{layer.icache_size:,} int")
        cache = " + ".join(parts) or "0"
        rows.append((str(r + 1), "  " * depth + name, str(layer.out_shape),
                     f"{layer.n_params:,}", cache))
        kernels.setdefault(type(layer).__name__, tuple(layer.kernels))
    if net.loss != "mse":
        kernels[type(net.rows[-1]).__name__] = (
            "fused with the loss in training",
            f"loss {net.loss}: dZ = {'P' if net.loss == 'cross_entropy' else 'σ(Z)'} − Y")
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"total: {net.flat_params.size:,} parameters ({net.dtype.name}), loss "
                 f"{net.loss}")
    lines.append("kernels (forward / backward):")
    kind_width = max(map(len, kernels))
    for kind, (fwd, bwd) in kernels.items():
        line = f"  {kind.ljust(kind_width)}  {fwd} / {bwd}"
        if len(line) > 100:
            line = f"  {kind.ljust(kind_width)}  {fwd} /\n  {' ' * kind_width}  {bwd}"
        lines.append(line)
    if batch_size is not None:
        lines.extend(_memory_lines(net, batch_size))
    return "\n".join(lines)


def _mib(n_bytes: float) -> str:
    """Bytes in MiB, or in GiB from one GiB on."""
    if n_bytes >= 1 << 30:
        return f"{n_bytes / (1 << 30):,.2f} GiB"
    return f"{n_bytes / (1 << 20):,.2f} MiB"


def _memory_lines(net, m: int) -> list[str]:
    """Every buffer training allocates for batches of ``m`` (``loopprop.plan.Buffers`` and the
    flat vectors), in the order of the line: parameters and gradients; the optimizer's state
    (momentum's velocity, Adam's two moments: 0, 1 or 2 more of the parameters' size);
    activations, their gradients, caches (int32 indices at 4 bytes), the per-example
    workspaces, the fixed workspaces (convolutions' transposed weights and gradient tiles);
    the loss's two columns per output."""
    item = net.dtype.itemsize
    lay = net.layout
    params = lay["params"] * item
    acts = lay["acts"] * m * item
    caches = (lay["cache"] * item + lay["icache"] * 4) * m
    work = lay["work"] * m * item
    fwork = lay["fwork"] * item
    loss = m * lay["positions"] * (item + 8)
    batch = 2 * acts + caches + work + fwork + loss
    return [f"memory for a batch of {m:,}: activations {acts / (1 << 20):,.2f} MiB (their "
            f"gradients as much again), caches {caches / (1 << 20):,.2f} MiB,",
            f"  workspaces {_mib(work)} per batch + {_mib(fwork)} fixed (convolutions' "
            "transposed weights)",
            f"memory in all: parameters {_mib(params)}, gradients {_mib(params)}, batch "
            f"buffers {_mib(batch)};",
            f"  optimizer state: sgd none, momentum {_mib(params)}, adam and adamw "
            f"{_mib(2 * params)}",
            f"  in all: {_mib(2 * params + batch)} with sgd, {_mib(3 * params + batch)} with "
            f"momentum, {_mib(4 * params + batch)} with adam"]


__all__ = ["summary"]
