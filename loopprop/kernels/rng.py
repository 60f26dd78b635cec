"""loopprop's own random numbers for compiled code: SplitMix64, with no global state.

Compiled code that calls ``np.random.seed`` reseeds the *one* generator that every Numba
function of the process shares: a user's own ``@njit`` code would then draw the same numbers
after every ``fit(seed=0)``. loopprop's kernels therefore never touch ``np.random``; they draw
from SplitMix64 (Steele, Lea and Flood, 2014; the generator that seeds ``xoshiro``), whose whole
state is one 64-bit counter that the caller owns::

    state ← state + 0x9E3779B97F4A7C15
    z ← (state ⊕ (state ≫ 30)) · 0xBF58476D1CE4E5B9
    z ← (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB
    out ← z ⊕ (z ≫ 31)

Because the output is a hash of the counter, draw ``t`` of a stream seeded with ``s`` is
``_mix(s + (t + 1)·γ)``: any draw can be computed on its own, so a parallel loop (a dropout
mask, say) gets the same numbers on any thread count.

With ``NUMBA_DISABLE_JIT=1`` the same functions run on Python integers masked to 64 bits
(NumPy's unsigned scalars would warn on the intended wraparound).
"""

from __future__ import annotations

import numba
import numpy as np

from .._jit import kernel

GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1

if numba.config.DISABLE_JIT:  # pure Python: wraparound on Python ints

    def _mix(z):
        """The SplitMix64 output function of a 64-bit value ``z``."""
        z = int(z) & _MASK
        z = ((z ^ (z >> 30)) * _M1) & _MASK
        z = ((z ^ (z >> 27)) * _M2) & _MASK
        return np.uint64(z ^ (z >> 31))

    def _next(state):
        """Advance ``state[0]`` by γ and return the next 64-bit output."""
        s = (int(state[0]) + GAMMA) & _MASK
        state[0] = np.uint64(s)
        return _mix(s)

else:

    @kernel(inline=True)
    def _mix(z):
        """The SplitMix64 output function of a 64-bit value ``z``."""
        z = np.uint64(z)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))

    @kernel(inline=True)
    def _next(state):
        """Advance ``state[0]`` by γ and return the next 64-bit output."""
        s = state[0] + np.uint64(GAMMA)
        state[0] = s
        return _mix(s)


@kernel
def _below(state, bound):
    """A random integer in ``[0, bound)`` for ``1 ≤ bound < 2³²``: the top 32 bits of a draw,
    scaled by multiplication (Lemire's method, bias below ``bound / 2³²``)."""
    r = _next(state) >> np.uint64(32)
    return np.int64((r * np.uint64(bound)) >> np.uint64(32))


@kernel
def _shuffle(perm, seed):
    """Fisher–Yates shuffle of ``perm`` in place, from a stream seeded with ``seed`` (≥ 0).

    For ``p = n−1 … 1``: draw ``q`` uniform in ``[0, p]`` and swap ``perm[p]``, ``perm[q]``.
    Shapes: perm (n,) int64.
    """
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(seed)
    for p in range(perm.shape[0] - 1, 0, -1):
        q = _below(state, p + 1)
        perm[p], perm[q] = perm[q], perm[p]


def new_state(seed: int) -> np.ndarray:
    """A generator state (a one-element ``uint64`` array) for ``seed``."""
    return np.array([seed & _MASK], dtype=np.uint64)
