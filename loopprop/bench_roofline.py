"""Each benchmark row under its roof (``loopprop bench --roofline``): the work a row does, the
rate each library reaches, and that rate as a fraction of the machine's measured peak
(:mod:`loopprop.peaks`).

The work is counted as the formulas state it, not as any library does it:

* **Products** count two operations per multiply-add of every matrix product of the pass --
  forward, ``dW`` and ``dA_prev`` (skipped for a network's first layer, whose input needs no
  gradient), convolutions' sums over channels and kernel positions, attention's two products
  on the causal triangle (``T(T+1)/2`` pairs) forward and four backward, an LSTM's four gates.
  Elementwise work (activations, the loss, the optimizer) is left out: the rate is that of the
  products, and the roof is the FMA peak of the dtype on the threads the row ran on.
* **Memory-bound rows** (activations, normalizations) count the bytes their formulas must
  move at least -- forward reads ``X`` and writes ``Y``; backward reads ``dY`` and ``X`` and
  writes ``dX``: five arrays of the input's size -- against the copy bandwidth (read plus
  written) of the level their four arrays fit in.

A row far below its roof (under ~70 %) spends its time on something else than the work
counted: docs/performance.md says what, row by row.
"""

from __future__ import annotations

from typing import Callable

from .peaks import Peaks, cache_sizes

#: the workload's work: (``"flop"`` or ``"byte"``, amount, bytes its arrays occupy)
Work = tuple[str, float, int]


def mlp_flops(sizes: list[int], n: int) -> float:
    """Operations of the products of one epoch of a dense network over ``n`` examples: each
    layer's forward and ``dW`` (``2·n_in·n_out`` per example each), and ``dA_prev`` for every
    layer but the first."""
    total = 0.0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2.0 * a * b * n * (2 if i == 0 else 3)
    return total


def network_flops(net, n: int) -> float:
    """Operations of the products of one epoch of ``net`` (its ``Dense`` and ``Conv2d`` layers;
    other layers' work is not counted) over ``n`` examples: forward, gradient of the weights
    and, past the first layer with weights, of the input."""
    from .layers import Conv2d, Dense

    total, first = 0.0, True
    for layer in net.layers:
        if isinstance(layer, Dense):
            macs = layer.n_in * layer.n_out * layer.positions
        elif isinstance(layer, Conv2d):
            kh, kw = layer.kernel
            macs = layer.c_out * layer.c_in * kh * kw * layer.H_out * layer.W_out
        else:
            continue
        total += 2.0 * macs * n * (2 if first else 3)
        first = False
    return total


def gpt_flops(n_layer: int, n_embd: int, block: int, batch: int, vocab: int) -> float:
    """Operations of the products of one GPT training step: per layer and token the
    projections (``3d²`` for q, k, v, ``d²`` out, ``8d²`` in the MLP), per layer and sequence
    the causal attention's two products (``T(T+1)/2·d`` each), the output head (``V·d`` per
    token); three passes (forward, weights, inputs)."""
    tokens = block * batch
    macs = n_layer * 12 * n_embd ** 2 * tokens
    macs += n_layer * 2 * (block * (block + 1) // 2) * n_embd * batch
    macs += vocab * n_embd * tokens
    return 2.0 * 3 * macs


def attention_flops(n_head: int, d_head: int, T: int, m: int) -> float:
    """Causal attention forward (``S = QKᵀ``, ``O = PV``) and backward (``dV``, ``dP``, ``dQ``,
    ``dK``) on the triangle: six products of ``T(T+1)/2·d`` multiply-adds per head and
    example."""
    return 2.0 * 6 * (T * (T + 1) // 2) * d_head * n_head * m


def lstm_flops(d: int, n_h: int, T: int, m: int, first: bool = False) -> float:
    """An LSTM layer's forward + backward through time: the four gates' ``4h·(d + h)``
    multiply-adds per step and example forward, as many for the weights' gradients, and for
    the inputs' and the state's (the input's skipped when ``first``)."""
    fwd = 4 * n_h * (d + n_h) * T * m
    back = fwd + (4 * n_h * n_h * T * m if first else fwd)
    return 2.0 * (fwd + back)


def level_of(footprint: int, threads: int, caches: dict[str, int] | None = None) -> str:
    """The memory level ``footprint`` bytes fit in: all threads' L2, the L3, or DRAM."""
    caches = cache_sizes() if caches is None else caches
    if footprint <= caches.get("L2", 1 << 20) * threads:
        return "L2"
    if footprint <= caches.get("L3", 32 << 20):
        return "L3"
    return "DRAM"


def roofline_rows(rows: list[tuple[str, dict[str, float]]], peaks: Peaks, dtype: str,
                  threads: int, work_of: Callable[[str, str], Work | None]) -> list[dict]:
    """For each measured row ``(name, {library: seconds})`` with a roof: its work (``work_of(name,
    dtype)``: :func:`loopprop.bench.row_work`), the roof (``"FMA <dtype>"`` or ``"copy
    <level>"``, its rate) and each library's rate and fraction of it."""
    out = []
    for name, seconds in rows:
        work = work_of(name, dtype)
        if work is None:
            continue
        unit, amount, footprint = work
        if unit == "flop":
            roof_name, roof = f"FMA {dtype}", peaks.fma.get((dtype, threads))
        else:
            level = level_of(footprint, threads)
            roof_name, roof = f"copy {level}", peaks.copy.get((level, threads))
        if not roof:
            continue
        rates = {lib: amount / t / 1e9 for lib, t in seconds.items() if t > 0}
        out.append({"name": name, "unit": unit, "amount": amount, "roof_name": roof_name,
                    "roof": roof, "rates": rates,
                    "fractions": {lib: r / roof for lib, r in rates.items()}})
    return out


def roofline_table(rows: list[dict], peaks: Peaks) -> str:
    """The rows of :func:`roofline_rows` as text: work, roof, and per library its rate and
    fraction of the roof."""
    lines = [peaks.table(), "",
             f"{'workload':46s} {'work':>11s} {'roof':>22s} {'loopprop':>16s} {'numpy':>16s} "
             f"{'torch':>16s}"]
    for r in rows:
        rate_unit = "GF/s" if r["unit"] == "flop" else "GB/s"
        work = (f"{r['amount'] / 1e9:8.3g} GF" if r["unit"] == "flop" else
                f"{r['amount'] / 1e6:8.3g} MB")
        roof = f"{r['roof_name']} {r['roof']:.0f} {rate_unit}"
        cells = []
        for lib in ("loopprop", "numpy", "torch"):
            if lib in r["rates"]:
                cells.append(f"{r['rates'][lib]:7.1f} {100 * r['fractions'][lib]:5.0f} %")
            else:
                cells.append(f"{'—':>16s}")
        lines.append(f"{r['name']:46s} {work:>11s} {roof:>22s} " + " ".join(
            f"{c:>16s}" for c in cells))
    lines.append("each library's rate in GF/s (products only) or GB/s (the bytes the formulas "
                 "move at least), and as a % of the roof measured in this run")
    return "\n".join(lines)

