"""Batch normalization's backward pass for one feature, term by term, with real numbers.

The derivation students find hardest: the mean μ and the variance σ² depend on *every* example
of the batch, so the gradient of one input x_j has three paths -- through x̂_j directly, through
σ² and through μ. This script follows each path with four numbers, sums them, shows that the
sum is the compact formula the kernels use (docs/formulas.md, "Batch normalization"), and
checks it against ``loopprop.batchnorm_backward``.

Run::

    python examples/batchnorm_by_hand.py

Output::

    One feature over a batch of N = 4: x = [1, 2, 4, 9], γ = 2, β = 0.5, ε = 1e-05
    upstream gradient g = dL/dy = [0.1, -0.2, 0.3, 0.05]

    Forward
      μ  = Σx/N                   = 16/4                    = 4
      σ² = Σ(x − μ)²/N            = 38/4                    = 9.5
      r  = 1/√(σ² + ε)            = 1/√9.50001              = 0.324443
      x̂  = (x − μ)·r              = [-0.973328, -0.648885, 0, 1.622213]
      y  = γ·x̂ + β                = [-1.446656, -0.797771, 0.500000, 3.744427]

    Backward, the parameters
      dβ = Σ g                    = 0.25
      dγ = Σ g·x̂                  = 0.1136

    Backward, the input: three paths
      ĝ       = dL/dx̂ = γ·g                           = [0.2, -0.4, 0.6, 0.1]
      dL/dσ²  = Σ ĝ·(x − μ) · (−½)(σ² + ε)^(−3/2)     = -0.011953
      dL/dμ   = Σ ĝ·(−r) + dL/dσ²·(−2/N)·Σ(x − μ)     = -0.162221 + 0 (Σ(x − μ) = 0)
      dL/dx_j = ĝ_j·r + dL/dσ²·2(x_j − μ)/N + dL/dμ/N
        j = 1:  0.064889 +  0.017930 + -0.040555 =  0.042263
        j = 2: -0.129777 +  0.011953 + -0.040555 = -0.158379
        j = 3:  0.194666 +  0.000000 + -0.040555 =  0.154110
        j = 4:  0.032444 + -0.029883 + -0.040555 = -0.037994

    The compact form: dx_j = r/N·(N·ĝ_j − Σĝ − x̂_j·Σĝ·x̂)  (Σĝ = 0.5, Σĝ·x̂ = 0.2271)
      dx = [0.042263, -0.158379, 0.154110, -0.037994]
    Σ_j dx_j = 0 (up to rounding): shifting every input by the same amount changes nothing

    loopprop.batchnorm_backward (naive and tuned kernels) agree to 1e-12: True
"""

from __future__ import annotations

import math

import numpy as np

import loopprop as lp


def fmt(values, digits: int = 6) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") if v == round(v) else
                           f"{v:.{digits}f}" for v in values) + "]"


def main() -> None:
    x = np.array([1.0, 2.0, 4.0, 9.0])
    g = np.array([0.1, -0.2, 0.3, 0.05])
    gamma, beta, eps = 2.0, 0.5, 1e-5
    N = x.size
    print(f"One feature over a batch of N = {N}: x = [1, 2, 4, 9], γ = {gamma:g}, β = {beta:g}, "
          f"ε = {eps:g}")
    print("upstream gradient g = dL/dy = [0.1, -0.2, 0.3, 0.05]\n")

    mu = x.sum() / N
    var = ((x - mu) ** 2).sum() / N
    r = 1.0 / math.sqrt(var + eps)
    xhat = (x - mu) * r
    y = gamma * xhat + beta
    print("Forward")
    print(f"  μ  = Σx/N                   = {x.sum():g}/{N}                    = {mu:g}")
    print(f"  σ² = Σ(x − μ)²/N            = {((x - mu) ** 2).sum():g}/{N}                    "
          f"= {var:g}")
    print(f"  r  = 1/√(σ² + ε)            = 1/√{var + eps:g}              = {r:.6f}")
    print(f"  x̂  = (x − μ)·r              = {fmt(xhat)}")
    print(f"  y  = γ·x̂ + β                = {fmt(y)}\n")

    dbeta = g.sum()
    dgamma = (g * xhat).sum()
    print("Backward, the parameters")
    print(f"  dβ = Σ g                    = {dbeta:.4g}")
    print(f"  dγ = Σ g·x̂                  = {dgamma:.4f}\n")

    gh = gamma * g  # dL/dx̂
    dvar = (gh * (x - mu)).sum() * (-0.5) * (var + eps) ** -1.5
    dmu_direct = (gh * -r).sum()
    dmu_via_var = dvar * (-2.0 / N) * (x - mu).sum()  # 0: the deviations sum to 0
    dmu = dmu_direct + dmu_via_var
    paths = np.stack([gh * r, dvar * 2.0 * (x - mu) / N, np.full(N, dmu / N)])
    dx_paths = paths.sum(axis=0)
    print("Backward, the input: three paths")
    print(f"  ĝ       = dL/dx̂ = γ·g                           = {fmt(gh, 1)}")
    print(f"  dL/dσ²  = Σ ĝ·(x − μ) · (−½)(σ² + ε)^(−3/2)     = {dvar:.6f}")
    print(f"  dL/dμ   = Σ ĝ·(−r) + dL/dσ²·(−2/N)·Σ(x − μ)     = {dmu_direct:.6f} + "
          f"{abs(dmu_via_var):g} (Σ(x − μ) = 0)")
    print("  dL/dx_j = ĝ_j·r + dL/dσ²·2(x_j − μ)/N + dL/dμ/N")
    for j in range(N):
        a, b, c = paths[:, j] + 0.0  # + 0.0: no negative zero
        print(f"    j = {j + 1}: {a:9.6f} + {b:9.6f} + {c:9.6f} = {dx_paths[j]:9.6f}")

    s1, s2 = gh.sum(), (gh * xhat).sum()
    dx = r / N * (N * gh - s1 - xhat * s2)
    print(f"\nThe compact form: dx_j = r/N·(N·ĝ_j − Σĝ − x̂_j·Σĝ·x̂)  (Σĝ = {s1:.4g}, "
          f"Σĝ·x̂ = {s2:.4f})")
    print(f"  dx = {fmt(dx)}")
    assert np.allclose(dx, dx_paths, rtol=1e-12, atol=1e-15)
    assert abs(dx.sum()) < 1e-12
    print("Σ_j dx_j = 0 (up to rounding): shifting every input by the same amount changes "
          "nothing\n")

    X, G = x.reshape(1, N), g.reshape(1, N)  # one feature, N examples: (n, m) = (1, 4)
    ok = True
    for impl in ("naive", "tuned"):
        Y, mean, rstd = lp.batchnorm_forward(X, np.array([gamma]), np.array([beta]), eps,
                                             impl=impl)
        kdx, kdgamma, kdbeta = lp.batchnorm_backward(G, X, np.array([gamma]), mean, rstd,
                                                     impl=impl)
        ok &= bool(np.allclose(Y[0], y, rtol=1e-12) and np.allclose(kdx[0], dx, rtol=1e-12,
                                                                    atol=1e-15)
                   and abs(kdgamma[0] - dgamma) < 1e-12 and abs(kdbeta[0] - dbeta) < 1e-12)
    print(f"loopprop.batchnorm_backward (naive and tuned kernels) agree to 1e-12: {ok}")


if __name__ == "__main__":
    main()
