"""How attention's probabilities and their gradients look for one sequence: one head,
``d_head = 4``, six positions, causal.

Forward (docs/formulas.md, "Attention, one head"): ``P[t, s] = softmax_s(Q[:, t]·K[:, s] /
√d)`` over the keys ``s ≤ t`` — a lower-triangular matrix whose rows sum to 1 (the first query
sees only itself). Backward, for the loss ``L = Σ G ⊙ O`` (G a fixed random matrix), the
gradient reaching the scores is ``dS = P ⊙ (dP − Σ_s P·dP)`` with ``dP = dOᵀ·V``: zero wherever
P is (the mask), and every row of dS sums to 0 — adding a constant to a row of scores does not
change a softmax. The gradient of one query's vector, ``dQ[:, t] = Σ_s dS[t, s]·K[:, s]/√d``,
therefore only mixes the keys it attended to.

Run::

    python examples/attention_probabilities.py
"""

from __future__ import annotations

import numpy as np

import loopprop as lp


def matrix(a: np.ndarray) -> str:
    return "\n".join("  " + " ".join(f"{v + 0.0:7.3f}" for v in row) for row in a)


def main(seed: int = 1, T: int = 6, d: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    Q, K, V = (rng.standard_normal((1, d, T, 1)) for _ in range(3))  # (heads, d, T, batch)
    G = rng.standard_normal((1, d, T, 1))  # L = Σ G ⊙ O, so dO = G
    O, P = lp.attention_forward(Q, K, V, causal=True)
    dQ, dK, dV = lp.attention_backward(G, Q, K, V, P)

    p = P[0, :, :, 0]  # (T queries, T keys)
    dP = G[0, :, :, 0].T @ V[0, :, :, 0]  # dP[t, s] = Σ_e dO[e, t] · V[e, s]
    dS = p * (dP - np.sum(p * dP, axis=1, keepdims=True))
    print(f"P[t, s]: query t (rows) attends to key s (columns), causal, T = {T}, d_head = {d}")
    print(matrix(p))
    print("row sums of P:", " ".join(f"{v:.3f}" for v in p.sum(axis=1)))
    print("dS = P ⊙ (dP − Σ_s P·dP), the gradient of the scores (before the 1/√d):")
    print(matrix(dS))
    print("row sums of dS:", " ".join(f"{v:.1e}" for v in dS.sum(axis=1)))
    # dQ from dS by hand, against the kernel
    dQ_hand = (K[0, :, :, 0] @ dS.T) / np.sqrt(d)
    agree = np.allclose(dQ_hand, dQ[0, :, :, 0], rtol=1e-12, atol=1e-14)
    print(f"dQ[:, t] = Σ_s dS[t, s]·K[:, s]/√d by hand equals attention_backward's: {agree}")
    return {"P": p, "dS": dS, "dQ": dQ, "dQ_hand": dQ_hand}


if __name__ == "__main__":
    main()
