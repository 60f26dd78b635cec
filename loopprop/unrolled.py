"""A recurrent network unrolled over time, as a Mermaid diagram (docs/formulas.md,
"Backpropagation through time").

One column per time step: the token's embedding, every recurrent layer's state at that step
and the step's output and loss. Solid arrows are the forward pass -- up through the layers,
and along each layer from step ``t − 1`` to ``t`` (the state it carries: ``h``, and the LSTM's
``c``); dashed arrows are the backward pass, the gradient carried from step ``t + 1`` back into
step ``t`` (``W_hᵀ·δ_{t+1}``, and the LSTM's ``dc ⊙ f``). The same weights serve every column:
their gradient is the sum of every column's contribution.
"""

from __future__ import annotations

from .layers.recurrent import LSTM, _Recurrent


def _q(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def unrolled(net, steps: int = 4) -> str:
    """Mermaid source of ``net`` (a network holding recurrent layers) unrolled over its first
    ``steps`` time steps (all of them when ``T`` is smaller; a last column ``…`` stands for the
    others)."""
    rec = [(r, layer) for r, layer in enumerate(net.rows) if isinstance(layer, _Recurrent)]
    if not rec:
        raise ValueError("kind: the unrolled diagram draws recurrent layers (RNN, LSTM, GRU), "
                         "and this network has none; draw it with kind='network'")
    T = rec[0][1].T
    shown = min(steps, T)
    first, last = net.rows[0], net.rows[-1]
    lines = ["flowchart LR"]
    for t in range(shown):
        lines.append(f"    subgraph s{t}[{_q(f't = {t}')}]")
        lines.append("        direction BT")
        lines.append(f"        x{t}[{_q(f'x_{t} = {type(first).__name__} of token {t}')}]")
        below = f"x{t}"
        for n, (_, layer) in enumerate(rec, start=1):
            state = "h, c" if isinstance(layer, LSTM) else "h"
            label = f"{type(layer).__name__} {n}: {state} at t = {t}"
            lines.append(f"        h{n}_{t}[{_q(label)}]")
            lines.append(f"        {below} --> h{n}_{t}")
            below = f"h{n}_{t}"
        out = f"{type(last).__name__} → P_{t}; loss L_{t}"
        lines.append(f"        y{t}[{_q(out)}]")
        lines.append(f"        {below} --> y{t}")
        lines.append("    end")
    more = shown < T
    if more:
        lines.append(f"    more[{_q(f'… t = {shown} … {T - 1}')}]")
    for n, (_, layer) in enumerate(rec, start=1):
        lstm = isinstance(layer, LSTM)
        fwd = "h_t, c_t" if lstm else "h_t"
        bwd = "W_hᵀ·δ_(t+1), dc ⊙ f_(t+1)" if lstm else "W_hᵀ·δ_(t+1)"
        for t in range(shown - 1):
            lines.append(f"    h{n}_{t} -->|{_q(fwd)}| h{n}_{t + 1}")
            lines.append(f"    h{n}_{t + 1} -.->|{_q(bwd)}| h{n}_{t}")
        if more:
            lines.append(f"    h{n}_{shown - 1} --> more")
            lines.append(f"    more -.-> h{n}_{shown - 1}")
    total = "L = mean over t of L_t; dW_h = Σ_t δ_t·h_(t−1)ᵀ, one term per column"
    lines.append(f"    total[{_q(total)}]")
    for t in range(shown):
        lines.append(f"    y{t} --> total")
    return "\n".join(lines)
