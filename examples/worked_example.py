"""The guide's §11 worked example, step by step, computed by loopprop's compiled neuron kernel.

Run::

    python examples/worked_example.py

Output::

    Guide §11: one sigmoid neuron, x = 2, w = 0.5, b = 1, y = 1, L = ½(y − a)²

    Forward pass
      z = w·x + b                      = 0.5·2 + 1                 = 2
      a = σ(z)                         = σ(2)                      = 0.8808
      L = ½(y − a)²                    = ½(1 − 0.8808)²            ≈ 0.00710  (guide: ≈ 0.00709)

    Backward pass
      1. dL/da = a − y                 = 0.8808 − 1                = -0.1192
      2. da/dz = σ(z)(1 − σ(z))        = 0.8808·(1 − 0.8808)       ≈ 0.1050
      3. dL/dz = dL/da · da/dz         = (-0.1192)·(0.1050)        ≈ -0.0125
      4. dL/dw = dL/dz · x             = (-0.0125)·2               ≈ -0.0250
      5. dL/db = dL/dz · 1             = -0.0125                   ≈ -0.0125

    Update (§10, η = 0.1): w ← 0.5 − 0.1·(-0.0250) = 0.502503, b ← 1 − 0.1·(-0.0125) = 1.001252
"""

from loopprop import neuron_step


def main() -> None:
    x, w, b, y = 2.0, 0.5, 1.0, 1.0
    s = neuron_step(x, w, b, y, activation="sigmoid", loss="mse")
    a = s["a"]
    rows = [
        ("z = w·x + b", f"{w:g}·{x:g} + {b:g}", f"= {s['z']:g}"),
        ("a = σ(z)", f"σ({s['z']:g})", f"= {a:.4f}"),
        ("L = ½(y − a)²", f"½({y:g} − {a:.4f})²", f"≈ {s['loss']:.5f}  (guide: ≈ 0.00709)"),
    ]
    print("Guide §11: one sigmoid neuron, x = 2, w = 0.5, b = 1, y = 1, L = ½(y − a)²\n")
    print("Forward pass")
    for formula, numbers, value in rows:
        print(f"  {formula:<32} = {numbers:<25} {value}")
    steps = [
        ("dL/da = a − y", f"{a:.4f} − {y:g}", f"= {s['dL_da']:.4f}"),
        ("da/dz = σ(z)(1 − σ(z))", f"{a:.4f}·(1 − {a:.4f})", f"≈ {s['da_dz']:.4f}"),
        ("dL/dz = dL/da · da/dz", f"({s['dL_da']:.4f})·({s['da_dz']:.4f})",
         f"≈ {s['dL_dz']:.4f}"),
        ("dL/dw = dL/dz · x", f"({s['dL_dz']:.4f})·{x:g}", f"≈ {s['dL_dw']:.4f}"),
        ("dL/db = dL/dz · 1", f"{s['dL_dz']:.4f}", f"≈ {s['dL_db']:.4f}"),
    ]
    print("\nBackward pass")
    for n, (formula, numbers, value) in enumerate(steps, 1):
        print(f"  {n}. {formula:<29} = {numbers:<25} {value}")
    lr = 0.1
    print(f"\nUpdate (§10, η = {lr:g}): w ← {w:g} − {lr:g}·({s['dL_dw']:.4f}) = "
          f"{w - lr * s['dL_dw']:.6f}, b ← {b:g} − {lr:g}·({s['dL_db']:.4f}) = "
          f"{b - lr * s['dL_db']:.6f}")


if __name__ == "__main__":
    main()
