"""Data-parallel training on MPI: ``fit(..., comm=MPI.COMM_WORLD)``, ``fit_text(..., comm=...)``
and ``mpiexec -n N loopprop train --data-parallel``.

Every rank (process) holds the same parameters (rank 0's, broadcast when the fit starts),
draws the same global batch order from the shared seed, and computes its *shard* of each global
batch in compiled code (:mod:`loopprop.shards`: the shard's mean gradient scaled by its share
``m_r / M``). One all-reduce sums the shards into the global batch's mean gradient and every
rank takes the same update; from :data:`SLICED_MIN_PARAMS` parameters on, a reduce-scatter
instead gives each rank the sum over its own slice of θ, each rank updates its slice (the
optimizer's work and state split between the ranks: :class:`Slice`, ZeRO's first stage) and an
all-gather gives every rank the whole new θ (the bytes of one all-reduce). The global batch
size, the learning rate and the results do not depend on the number of ranks: against one
process the parameters agree to rounding (the sums are taken in another order), one rank gives
the single process's bits, and with a fixed number of ranks runs are bitwise reproducible
(MPICH's sum over ranks is taken in an order fixed by the count and the ranks).

MPI is called from Python between two compiled calls per step (``numba-mpi`` can call it from
compiled code, but such functions cannot be cached). Before the gradients are summed, a
two-value ``Allreduce`` (maximum) tells every rank whether some rank failed -- an exception, a
gradient holding NaN or Inf -- or was interrupted: then all stop together, rank 0 gathers what
each rank reports and every rank raises :class:`DataParallelError` (the parameters are those of
the last complete step on every rank). A rank killed outright ends the job through ``mpiexec``.

Layers whose output mixes the examples of a batch (batch norm: ``Layer.mixes_examples``) are
refused: each rank would normalize over its shard only. Dropout draws each example the mask
one process draws it (its columns' place in the global batch goes with the step:
``Step.col0``, ``Step.cols``), so a dropout network, too, gives the same results on any number
of ranks (PyTorch's ``DistributedDataParallel`` draws per process).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numba
import numpy as np

from .bundles import Optim
from .kernels.optim import BLOCK, _sum_blocks
from .kernels.rng import _shuffle
from .plan import IN_SIZE
from .shards import _shard_step, _shard_text_step, _slice_squares, _slice_update
from .train import CLIP, LR, _descend, _window_of

#: from this many parameters on, each rank updates only its slice of θ (:class:`Slice`); below,
#: the whole update on every rank after one all-reduce. On 2 ranks of a Zen 4 machine the
#: MNIST-sized MLP (0.1 M parameters) ran its epoch 1.2× faster without slices, GPT-2 small
#: (124 M) its step 1.07× faster with them (docs/distributed.md)
SLICED_MIN_PARAMS = 1 << 20

#: how to install what data-parallel training needs
INSTALL = 'pip install "loopprop[dist]" (mpi4py and the MPICH library, from wheels)'


class DataParallelError(RuntimeError):
    """A rank failed during data-parallel training. Raised on every rank at the same step; rank
    0's message names each failing rank and what it reported."""


def mpi():
    """mpi4py's ``MPI`` module, or an ``ImportError`` that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"comm: data-parallel training needs mpi4py and an MPI library: "
                          f"{INSTALL}") from exc
    return MPI


def world():
    """``MPI.COMM_WORLD``: every process ``mpiexec`` started."""
    return mpi().COMM_WORLD


def shard(rank: int, size: int, M: int) -> tuple[int, int]:
    """Rank ``rank``'s columns ``[lo, hi)`` of a batch of ``M`` examples on ``size`` ranks:
    ``lo = ⌊rank·M/size⌋``, ``hi = ⌊(rank + 1)·M/size⌋`` (sizes differ by at most one)."""
    return rank * M // size, (rank + 1) * M // size


class Ranks:
    """The ranks of one data-parallel fit: the communicator, this rank's number, the threads
    each rank's kernels use (this machine's cores shared between the ranks on it), and the
    collective steps of the protocol."""

    def __init__(self, comm: Any, threads: int) -> None:
        MPI = mpi()
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm: expected an mpi4py intracommunicator such as "
                            f"MPI.COMM_WORLD, got {type(comm).__name__}; pass comm=None to "
                            "train in this process alone")
        self.comm = comm
        self._mpi = MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        on_node = local.Get_size()
        local.Free()
        #: ranks on one machine share its cores: two threads per rank on cores another rank
        #: keeps busy would wait for each other at every barrier
        self.threads = max(1, min(threads, (os.cpu_count() or 1) // on_node))
        self._status = np.zeros(2, np.int64)
        self._slice: Slice | None = None
        self._values = np.zeros(2, np.float64)

    def shard(self, M: int) -> tuple[int, int]:
        """This rank's columns of a batch of ``M`` (:func:`shard`)."""
        return shard(self.rank, self.size, M)

    def largest_shard(self, M: int) -> int:
        """The most columns any rank takes of a batch of ``M`` (its buffers' size)."""
        return -(-M // self.size)

    def start(self, net, facts: dict[str, Any]) -> None:
        """Before the first step: every rank must train the same network on the same data
        with the same options (``facts``, compared with rank 0's: a mismatch would leave the
        ranks waiting for each other forever), then all take rank 0's parameters and state."""
        facts = {"network": repr(net), "dtype": str(net.dtype), "parameters": net._theta.size,
                 **facts}
        every = self.comm.allgather(facts)
        for r, theirs in enumerate(every[1:], start=1):
            for key in every[0]:
                if theirs.get(key) != every[0].get(key):
                    raise DataParallelError(
                        f"comm: rank {r} trains with {key} = {theirs.get(key)!r} but rank 0 with "
                        f"{every[0].get(key)!r}: every rank must call fit with the same network, "
                        "data and options")
        self.comm.Bcast(net._theta, root=0)
        if net._state.size:
            self.comm.Bcast(net._state, root=0)

    def agree(self, report: str | None, stop: bool, where: str) -> bool:
        """Whether any rank was interrupted; a failure on any rank (``report``: what went
        wrong here, ``None`` if nothing) raises :class:`DataParallelError` on every rank."""
        status = self._status
        status[0], status[1] = report is not None, bool(stop)
        self.comm.Allreduce(self._mpi.IN_PLACE, status, op=self._mpi.MAX)
        if status[0]:
            reports = self.comm.gather(report, root=0)
            if self.rank == 0:
                told = "; ".join(f"rank {r}: {rep}" for r, rep in enumerate(reports)
                                 if rep is not None)
                raise DataParallelError(f"data-parallel training stopped at {where} on all "
                                        f"{self.size} ranks: {told}")
            raise DataParallelError(f"rank {self.rank}: stopped at {where} because "
                                    f"{'this' if report else 'another'} rank failed (rank 0 "
                                    "reports what happened)")
        return bool(status[1])

    def sum(self, buf: np.ndarray) -> None:
        """``buf`` ← its sum over the ranks (in place, on every rank)."""
        self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)

    def descend(self, flat, optim, t: int, norms, threads: int) -> float:
        """Step ``t + 1`` of the optimizer from every rank's shard gradient in ``flat.grad``.
        From :data:`SLICED_MIN_PARAMS` parameters on: summed and scattered (each rank receives
        its slice of θ's gradient, :class:`Slice`), the norms accumulated and the clipping norm
        taken, the rank's slice of θ updated, and the slices gathered into every rank's θ.
        Below: one ``Allreduce`` of the gradient and the whole update on every rank
        (:func:`loopprop.train._descend`; fewer collective calls, whose latency a small model's
        step cannot hide). Returns the rate used."""
        if flat.theta.size < SLICED_MIN_PARAMS:
            self.sum(flat.grad)
            return float(_descend(flat, optim, t, norms, threads))
        part = self._slice
        if part is None or part.theta.base is not flat.theta or part.opt1 is not optim.opt1:
            part = self._slice = Slice(self, flat, optim, norms.spans)
        return part.descend(flat, t, norms, threads)

    def sum_values(self, a: float, b: float) -> tuple[float, float]:
        """``(Σ a, Σ b)`` over the ranks."""
        v = self._values
        v[0], v[1] = a, b
        self.sum(v)
        return float(v[0]), float(v[1])


class Slice:
    """A rank's slice ``[a, b)`` of θ in a data-parallel fit: the optimizer's work and state are
    split between the ranks (ZeRO's first stage). The slices are whole blocks of
    :data:`~loopprop.kernels.optim.BLOCK` values (the blocks of the clipping norm's partial
    sums), ``⌊r·B/N⌋ … ⌊(r + 1)·B/N⌋`` of the ``B`` blocks for rank ``r``; a rank may have
    none (a model smaller than N blocks). Per step: ``Reduce_scatter`` of the shard gradients
    (each rank receives the sum over its slice), one ``Allgatherv`` of every rank's
    per-array squares and block sums (added in rank and block order: every rank gets the same
    norms, and one rank gets the single process's bits), the update of the slice, and an
    ``Allgatherv`` of θ's slices. Each rank's optimizer moments are touched on its slice only
    (the rest of those zero-filled vectors is never written, so never backed by memory)."""

    def __init__(self, ranks: Ranks, flat, optim, spans: np.ndarray) -> None:
        P = flat.theta.size
        blocks = -(-P // BLOCK)
        edges = [min(P, r * blocks // ranks.size * BLOCK) for r in range(ranks.size + 1)]
        edges[-1] = P
        self.ranks, self.comm, MPI = ranks, ranks.comm, ranks._mpi
        self.a = a = edges[ranks.rank]
        b = edges[ranks.rank + 1]
        self.counts = [edges[r + 1] - edges[r] for r in range(ranks.size)]
        self.displs = edges[:-1]
        self.theta_type = MPI.DOUBLE if flat.theta.dtype == np.float64 else MPI.FLOAT
        self.theta = flat.theta[a:b]
        self.part = np.empty(b - a, flat.theta.dtype)
        self.opt1 = optim.opt1
        hyper = optim.hyper.copy()
        self.clip = float(hyper[CLIP])
        hyper[CLIP] = 0.0  # the slice is clipped by the global norm before the update
        decay = np.array([(max(s, a) - a, min(e, b) - a) for s, e in optim.decay_spans
                          if min(e, b) > max(s, a)], np.int64).reshape(-1, 2)
        self.opt = Optim(optim.code, hyper, optim.opt1[a:b] if optim.opt1.size else optim.opt1,
                         optim.opt2[a:b] if optim.opt2.size else optim.opt2, decay)
        self.spans = spans
        K = spans.shape[0]
        mine = -(-(b - a) // BLOCK)
        self.send = np.zeros(K + mine, np.float64)
        self.sent = [K + -(-(edges[r + 1] - edges[r]) // BLOCK) for r in range(ranks.size)]
        self.recv = np.zeros(sum(self.sent), np.float64)
        self.sent_at = [sum(self.sent[:r]) for r in range(ranks.size)]
        self.block_at = [r * blocks // ranks.size for r in range(ranks.size + 1)]
        self.blocks = np.zeros(blocks, np.float64)  # every block's Σ g², in θ's order

    def descend(self, flat, t: int, norms, threads: int) -> float:
        """Step ``t + 1`` from the ranks' shard gradients in ``flat.grad`` (the class's five
        steps); ``norms.total`` accumulates every array's norm. Returns the rate used."""
        MPI, comm, K = self.ranks._mpi, self.comm, self.spans.shape[0]
        comm.Reduce_scatter(flat.grad, self.part, recvcounts=self.counts, op=MPI.SUM)
        _slice_squares(self.part, self.a, self.spans, self.send[:K], self.send[K:])
        comm.Allgatherv(self.send, [self.recv, self.sent, self.sent_at, MPI.DOUBLE])
        squares = np.zeros(K)
        for r, at in enumerate(self.sent_at):  # the ranks' shares in rank order
            squares += self.recv[at:at + K]
            self.blocks[self.block_at[r]:self.block_at[r + 1]] = \
                self.recv[at + K:at + self.sent[r]]
        norms.total[:] += np.sqrt(squares)
        norm = math.sqrt(_sum_blocks(self.blocks)) if self.clip > 0 else 0.0
        lr = _slice_update(self.theta, self.part, self.opt, t, norm, self.clip, threads)
        comm.Allgatherv(MPI.IN_PLACE, [flat.theta, self.counts, self.displs, self.theta_type])
        return float(lr)


def check_layers(net) -> None:
    """Refuse a network with a layer whose output mixes the batch's examples."""
    for layer in net._rows:
        if layer.mixes_examples:
            raise ValueError(
                f"comm: {layer!r} normalizes over the batch, and on several ranks each would "
                "see only its shard, so the results would depend on the number of ranks: use "
                "LayerNorm, or train in one process (comm=None)")


def run_steps(net, ranks: Ranks, flat, optim, opt, norms, stop: np.ndarray, n_steps: int,
              threads: int, local: Callable[[int], tuple[float, int, float]]
              ) -> tuple[float, int, int, float]:
    """``n_steps`` data-parallel steps: ``local(j)`` computes step ``j``'s shard gradient (and
    returns its ``(mean loss × shard size, correct, Σ grad²)``), the ranks agree that all went
    well, the gradients are summed and every rank takes the update. Returns the epoch's
    ``(Σ loss × batch size, correct, step count, last rate)`` summed over the ranks; an
    interruption on any rank ends the epoch on all after the same step (raising
    :class:`~loopprop.interrupt.Interrupted` with those values)."""
    from .interrupt import Interrupted

    t, lr = opt.t, float(opt.hyper[LR])
    total, correct = 0.0, 0
    stopping = False
    for j in range(n_steps):
        report = None
        try:
            loss_sum, right, squares = local(j)
            if not math.isfinite(squares):
                bad = net._nonfinite_arrays(flat.grad)
                where = f" in layer {bad[0][0]} ({bad[0][1]})" if bad else ""
                report = f"its gradient holds NaN or Inf{where}"
        except Exception as exc:  # told to every rank, then raised there as DataParallelError
            report = f"{type(exc).__name__}: {exc}"
        stopping = ranks.agree(report, bool(stop[0]), f"step {t + 1}")
        lr = ranks.descend(flat, optim, t, norms, threads)
        total += loss_sum
        correct += right
        t += 1
        if stopping:
            break
    total, summed = ranks.sum_values(total, correct)
    result = (total, int(round(summed)), t, lr)
    if stopping:
        stop[0] = 1
        raise Interrupted(result)
    return result


def fit_epoch(net, ranks: Ranks, flat, optim, opt, losses, data, norms, n: int, bs: int,
              shuffle_seed: int, dropout_seed: int, stop: np.ndarray, threads: int, table):
    """One epoch of :meth:`~loopprop.Network.fit` on this rank: the ``n`` examples shuffled as
    one process shuffles them (``shuffle_seed ≥ 0``), then a step per global batch of ``bs``;
    the kernels on ``threads`` (the rank's share of the cores, less those other processes
    keep busy: :func:`loopprop._jit.threads_for_load`)."""
    if shuffle_seed >= 0:
        _shuffle(data.perm, shuffle_seed)
    plan, fplan = net._plan, net._fplan

    def local(j: int):
        start = j * bs
        M = min(bs, n - start)
        lo, hi = ranks.shard(M)
        loss, right, squares = _shard_step(plan, fplan, flat, losses, data, start, lo, hi, M,
                                           dropout_seed * 1048576 + j, threads, table)
        return loss * (hi - lo), right, squares

    return run_steps(net, ranks, flat, optim, opt, norms, stop, -(-n // bs), threads, local)


def text_epoch(net, ranks: Ranks, flat, optim, opt, losses, corpus: np.ndarray, n_steps: int,
               bs: int, window_seed: int, dropout_seed: int, stop: np.ndarray, norms,
               threads: int, table):
    """``n_steps`` steps of :meth:`~loopprop.Network.fit_text` on this rank: random windows
    (``window_seed ≥ 0``, every rank drawing every column's offset from the same stream) or
    consecutive ones (``window_seed = −1``), ``bs`` windows per global batch, the kernels on
    ``threads`` (as :func:`fit_epoch`)."""
    plan, fplan = net._plan, net._fplan
    T = int(plan[0, IN_SIZE])
    rng = np.array([max(window_seed, 0)], np.uint64)
    first = opt.t
    lo, hi = ranks.shard(bs)

    def local(j: int):
        w = _window_of(first, j, corpus.shape[0], bs, T) if window_seed < 0 else -1
        loss, right, squares = _shard_text_step(
            plan, fplan, flat, losses, corpus, rng, w, bs, lo, hi, dropout_seed * 1048576 + j,
            threads, window_seed < 0 and w > 0, table)
        return loss * (hi - lo), right, squares

    return run_steps(net, ranks, flat, optim, opt, norms, stop, n_steps, threads, local)


def evaluator(net, ranks: Ranks, X: np.ndarray, Yf: np.ndarray, labels: np.ndarray,
              one_hot: bool) -> Callable[[], dict[str, float]]:
    """Validation split between the ranks: each evaluates its share of the held-out examples
    (contiguous copies, made once) and the means are combined, weighted by the shares."""
    n = X.shape[1]
    lo, hi = ranks.shard(n)
    part = (np.ascontiguousarray(X[:, lo:hi]), np.ascontiguousarray(Yf[:, lo:hi]),
            np.ascontiguousarray(labels[:, lo:hi]), one_hot)
    classify = net.loss != "mse"

    def evaluate() -> dict[str, float]:
        ev = net.evaluate_checked(*part) if hi > lo else {"loss": 0.0, "accuracy": 0.0}
        loss, acc = ranks.sum_values(ev["loss"] * (hi - lo),
                                     ev.get("accuracy", 0.0) * (hi - lo))
        out = {"loss": loss / n}
        if classify:
            out["accuracy"] = acc / n
        return out

    return evaluate


class Threads:
    """Numba's thread count set to the rank's share for the fit (evaluation's kernels read it),
    then restored."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self):
        self.before = numba.get_num_threads()
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        return self

    def __exit__(self, *exc) -> None:
        numba.set_num_threads(self.before)
