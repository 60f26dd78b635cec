"""What max pooling's gradient looks like: one 6 × 6 image, 2 × 2 windows, stride 2.

Max pooling is a selection (docs/formulas.md, "Pooling"): each output is one of its window's
four inputs, so its local derivative is 1 for that input and 0 for the other three. The
gradient that reaches the image is the upstream gradient *scattered* to the winners: three
entries of every four are exactly zero, whatever the upstream gradient. Centered finite
differences agree entry by entry.

Run::

    python examples/maxpool_gradient.py
"""

from __future__ import annotations

import numpy as np

import loopprop as lp


def grid(a: np.ndarray) -> str:
    return "\n".join("  " + " ".join(f"{v + 0.0:6.2f}" for v in row) for row in a)


def main(seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.round(rng.uniform(-1, 1, (1, 6, 6, 1)), 2)  # (channels, H, W, examples)
    upstream = np.round(rng.uniform(-1, 1, (1, 3, 3, 1)), 2)  # ∂L/∂A of the pooled 3 × 3
    pooled = lp.maxpool2d_forward(image, 2)
    grad = lp.maxpool2d_backward(upstream, image, 2)

    # finite differences of L = Σ upstream · maxpool(image), one input at a time
    eps, numeric = 1e-6, np.zeros_like(image)
    for y in range(6):
        for x in range(6):
            hi, lo = image.copy(), image.copy()
            hi[0, y, x, 0] += eps
            lo[0, y, x, 0] -= eps
            numeric[0, y, x, 0] = (np.sum(upstream * lp.maxpool2d_forward(hi, 2))
                                   - np.sum(upstream * lp.maxpool2d_forward(lo, 2))) / (2 * eps)

    print("the image A_prev (6 × 6):")
    print(grid(image[0, :, :, 0]))
    print("pooled A = max of each 2 × 2 window (3 × 3):")
    print(grid(pooled[0, :, :, 0]))
    print("upstream gradient ∂L/∂A (3 × 3):")
    print(grid(upstream[0, :, :, 0]))
    print("∂L/∂A_prev: each window's gradient lands on its maximum, the rest is 0:")
    print(grid(grad[0, :, :, 0]))
    zeros = int(np.sum(grad == 0))
    print(f"{zeros} of {grad.size} entries are exactly zero "
          f"({100 * zeros / grad.size:.0f} %: three in every window of four)")
    print(f"finite differences agree to 1e-8: {np.allclose(grad, numeric, atol=1e-8)}")
    return {"image": image, "upstream": upstream, "grad": grad, "numeric": numeric}


if __name__ == "__main__":
    main()
