"""The machine's roofs: how fast its cores multiply and how fast they read, measured.

A benchmark's time says little until it is set against what the machine can do at all. Two
numbers bound every workload of the benchmarks (:mod:`loopprop.bench_roofline` places each
under them):

* **The FMA peak** (:func:`fma_peak`): floating-point operations per second when every
  instruction is a fused multiply-add on a full SIMD register and nothing else runs. Each
  thread keeps twelve independent chains ``c ← a·b + c`` of 512-bit registers
  (:func:`~loopprop.kernels.simd.vfma`), enough to cover the instruction's latency on the CPUs
  the project runs on (4 cycles, two units); the count is ``2 × lanes`` operations per
  instruction. A product can approach this roof, never pass it.
* **Bandwidth** (:func:`bandwidth`): bytes per second read (a sum of every value, a register
  at a time, four accumulators) or copied (read plus written) from a buffer sized for one
  level of the memory hierarchy -- half the L2 per thread, half the L3, eight times the L3 in
  DRAM (:func:`buffer_sizes`, from ``/sys/devices/system/cpu``). Elementwise and
  normalization kernels move a few bytes per operation: this is their roof.

Both run on ``threads`` threads (each its own part: parallel regions of
:func:`~loopprop._jit.kernel`), best of ``repeats`` timed runs of about ``seconds`` each. They
measure the machine as it is at the moment, so measure them in the same run as the workloads
placed under them (``loopprop bench --roofline``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._jit import kernel, prange
from .kernels.simd import lanes, vadd, vfma, vload, vsplat, vstore

#: independent FMA chains per thread (the latency × throughput of the units, with room)
CHAINS = 12


@kernel(parallel=True)
def _fma_chains(out, n, threads):
    """Each thread ``part``: twelve registers ``c_q ← a·b + c_q``, ``n`` times, from its row of
    ``out`` (``out[part, 0]`` = a, ``out[part, 1]`` = b, the accumulators start at
    ``out[part, 0:lanes]``); their sum is stored back so that no step is dead code.
    Shapes: out (threads, lanes)."""
    for part in prange(threads):
        row = out[part]
        a = vsplat(row[0])
        b = vsplat(row[1])
        c0 = vload(row, 0)
        c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = c0, c0, c0, c0, c0, c0, c0, c0, c0, c0, c0
        for _ in range(n):
            c0 = vfma(a, b, c0)
            c1 = vfma(a, b, c1)
            c2 = vfma(a, b, c2)
            c3 = vfma(a, b, c3)
            c4 = vfma(a, b, c4)
            c5 = vfma(a, b, c5)
            c6 = vfma(a, b, c6)
            c7 = vfma(a, b, c7)
            c8 = vfma(a, b, c8)
            c9 = vfma(a, b, c9)
            c10 = vfma(a, b, c10)
            c11 = vfma(a, b, c11)
        s = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
        vstore(row, 0, vadd(s, vadd(vadd(c8, c9), vadd(c10, c11))))


@kernel(parallel=True)
def _read_parts(a, reps, threads, out):
    """Each thread sums its contiguous part of ``a`` (whole registers), ``reps`` times, into
    four register accumulators; ``out[part]`` receives the registers' sum. Shapes: a (N,)
    with N a multiple of ``threads × 4 × lanes``; out (threads, lanes)."""
    L = lanes(a)
    chunk = a.shape[0] // threads
    for part in prange(threads):
        lo = part * chunk
        s0 = vload(out[part], 0)
        s1, s2, s3 = s0, s0, s0
        for _ in range(reps):
            for i in range(lo, lo + chunk, 4 * L):
                s0 = vadd(s0, vload(a, i))
                s1 = vadd(s1, vload(a, i + L))
                s2 = vadd(s2, vload(a, i + 2 * L))
                s3 = vadd(s3, vload(a, i + 3 * L))
        vstore(out[part], 0, vadd(vadd(s0, s1), vadd(s2, s3)))


@kernel(parallel=True)
def _copy_parts(dst, src, reps, threads):
    """Each thread copies its contiguous part of ``src`` into ``dst``, a register at a time,
    ``reps`` times. Shapes: dst, src (N,), N a multiple of ``threads × lanes``."""
    L = lanes(src)
    chunk = src.shape[0] // threads
    for part in prange(threads):
        lo = part * chunk
        for _ in range(reps):
            for i in range(lo, lo + chunk, L):
                vstore(dst, i, vload(src, i))


def _best_rate(run, amount: float, seconds: float, repeats: int) -> float:
    """``amount`` per second of ``run(reps)`` (which does ``amount`` once per rep): ``reps``
    chosen from a first call so that one timed call takes about ``seconds``; best of
    ``repeats``."""
    run(1)  # compile, or load from the cache; touch the memory
    t0 = time.perf_counter()
    run(1)
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(seconds / once))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(reps)
        best = max(best, amount * reps / (time.perf_counter() - t0))
    return best


def _check_threads(threads: int) -> int:
    import numba

    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if threads > numba.get_num_threads():
        raise ValueError(f"threads is {threads} but Numba runs {numba.get_num_threads()} "
                         "threads: ask for at most that many (or set NUMBA_NUM_THREADS)")
    return int(threads)


def fma_peak(dtype: str = "float64", threads: int = 1, seconds: float = 0.1,
             repeats: int = 3) -> float:
    """GFLOP/s of ``threads`` threads doing nothing but fused multiply-adds on full registers
    of ``dtype`` (two operations each): the ceiling of every product (module docstring)."""
    threads = _check_threads(threads)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    L = 64 // dt.itemsize
    out = np.full((threads, L), 1e-6, dt)
    out[:, 1] = 1e-9  # a·b tiny: the chains stay finite whatever n is
    block = 10_000

    def run(reps):
        _fma_chains(out, block * reps, threads)

    flops = 2.0 * L * CHAINS * block * threads
    return _best_rate(run, flops, seconds, repeats) / 1e9


def bandwidth(nbytes: int, threads: int = 1, kind: str = "read", seconds: float = 0.1,
              repeats: int = 3) -> float:
    """GB/s read (``kind="read"``: every value summed) or copied (``"copy"``: bytes read plus
    bytes written) from a buffer of about ``nbytes`` (float64; rounded to whole registers per
    thread), on ``threads`` threads."""
    threads = _check_threads(threads)
    if kind not in ("read", "copy"):
        raise ValueError(f"kind must be 'read' or 'copy', got {kind!r}")
    if not isinstance(nbytes, (int, np.integer)) or nbytes < 64 * 4 * threads:
        raise ValueError(f"nbytes must be an integer of at least {256 * threads} (four "
                         f"registers per thread), got {nbytes!r}")
    unit = 8 * 4 * threads  # float64 values: four registers per thread
    n = max(unit, int(nbytes) // 8 // unit * unit)
    src = np.ones(n)
    if kind == "read":
        out = np.zeros((threads, 8))

        def run(reps):
            _read_parts(src, reps, threads, out)

        return _best_rate(run, 8.0 * n, seconds, repeats) / 1e9
    dst = np.empty_like(src)

    def run(reps):
        _copy_parts(dst, src, reps, threads)

    return _best_rate(run, 16.0 * n, seconds, repeats) / 1e9


def cache_sizes() -> dict[str, int]:
    """Bytes of the data caches as Linux reports them for CPU 0: ``{"L1": …, "L2": …, "L3":
    …}`` (the levels it lists; an empty dict where ``/sys`` does not say)."""
    sizes: dict[str, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(root.glob("index*")) if root.exists() else []:
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        sizes[f"L{level}"] = int(size.rstrip("KMG")) * scale
    return sizes


def buffer_sizes(threads: int, caches: dict[str, int] | None = None) -> dict[str, int]:
    """The buffer (bytes, all threads together) that :func:`bandwidth` reads for each level:
    half the L2 per thread, half the L3 (at least four L2s' worth: a VM may report a slice),
    eight times the L3 for DRAM (at least 256 MiB, at most 1 GiB). Where ``/sys`` is silent,
    1 MiB L2 and 32 MiB L3 are assumed."""
    caches = cache_sizes() if caches is None else caches
    l2 = caches.get("L2", 1 << 20)
    l3 = caches.get("L3", 32 << 20)
    return {"L2": l2 // 2 * threads, "L3": max(l3 // 2, 4 * l2 * threads),
            "DRAM": min(max(8 * l3, 256 << 20), 1 << 30)}


@dataclass
class Peaks:
    """The roofs measured in one run: ``fma[(dtype, threads)]`` GFLOP/s,
    ``read[(level, threads)]`` and ``copy[(level, threads)]`` GB/s, the buffer sizes used and
    the CPU's name."""

    fma: dict[tuple[str, int], float] = field(default_factory=dict)
    read: dict[tuple[str, int], float] = field(default_factory=dict)
    copy: dict[tuple[str, int], float] = field(default_factory=dict)
    sizes: dict[tuple[str, int], int] = field(default_factory=dict)
    cpu: str = ""

    def best_of(self, other: "Peaks") -> "Peaks":
        """Each roof the higher of this run's and ``other``'s (a roof measured while another
        process held a core reads low: measuring twice and keeping the higher is the
        steadier estimate)."""
        def higher(a, b):
            return {k: max(a.get(k, 0.0), b.get(k, 0.0)) for k in a.keys() | b.keys()}

        return Peaks(higher(self.fma, other.fma), higher(self.read, other.read),
                     higher(self.copy, other.copy), {**other.sizes, **self.sizes},
                     self.cpu or other.cpu)

    def table(self) -> str:
        """The roofs as text, one line per roof and a column per thread count."""
        counts = sorted({t for _, t in self.fma} | {t for _, t in self.read})
        head = f"{'roof':34s}" + "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>14s}"
                                         for t in counts)
        lines = [f"machine: {self.cpu or 'unknown CPU'}", head]
        for dt in ("float32", "float64"):
            if any((dt, t) in self.fma for t in counts):
                lines.append(f"{f'FMA peak, {dt}':34s}" + "".join(
                    f"{self.fma[(dt, t)]:>8.0f} GF/s" if (dt, t) in self.fma else f"{'—':>14s}"
                    for t in counts))
        for what, rates in (("read", self.read), ("copy", self.copy)):
            for level in ("L2", "L3", "DRAM"):
                if any((level, t) in rates for t in counts):
                    t0 = min(t for t in counts if (level, t) in rates)
                    size = self.sizes.get((level, t0), 0) // (t0 if level == "L2" else 1)
                    where = " per thread" if level == "L2" else ""
                    label = f"{what}, {level} ({_size_text(size)}{where})"
                    lines.append(f"{label:34s}" + "".join(
                        f"{rates[(level, t)]:>8.1f} GB/s" if (level, t) in rates
                        else f"{'—':>14s}" for t in counts))
        return "\n".join(lines)


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} B"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``""``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def measure_peaks(threads: tuple[int, ...] | None = None, dtypes=("float32", "float64"),
                  seconds: float = 0.1, levels=("L2", "L3", "DRAM")) -> Peaks:
    """Every roof for each thread count in ``threads`` (default: one, and Numba's count when it
    is more): the FMA peak per dtype, read and copy bandwidth per level (a few seconds)."""
    import numba

    if threads is None:
        n = numba.get_num_threads()
        threads = (1, n) if n > 1 else (1,)
    peaks = Peaks(cpu=cpu_name() or os.uname().machine)
    for t in threads:
        for dt in dtypes:
            peaks.fma[(dt, t)] = fma_peak(dt, t, seconds)
        sizes = buffer_sizes(t)
        for level in levels:
            peaks.sizes[(level, t)] = sizes[level]
            peaks.read[(level, t)] = bandwidth(sizes[level], t, "read", seconds)
            peaks.copy[(level, t)] = bandwidth(sizes[level], t, "copy", seconds)
    return peaks
