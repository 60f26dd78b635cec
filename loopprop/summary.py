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
    With ``batch_size``, a last line gives the memory of the activations and caches for a
    batch of that size. At most 100 columns."""
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
        item = net.dtype.itemsize
        lay, mib = net.layout, 1 << 20
        acts = lay["acts"] * batch_size * item / mib
        caches = (lay["cache"] * item + lay["icache"] * 4) * batch_size / mib  # int32
        lines.append(f"memory for a batch of {batch_size:,}: activations {acts:,.2f} MiB "
                     f"(their gradients as much again), caches {caches:,.2f} MiB")
    return "\n".join(lines)


__all__ = ["summary"]
