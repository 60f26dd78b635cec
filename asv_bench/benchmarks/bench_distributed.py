"""Data-parallel training (loopprop/distributed.py) on one rank: the MNIST-sized epoch through
``fit(comm=MPI.COMM_SELF)`` against plain ``fit`` -- the price of calling MPI and two compiled
functions from Python per step instead of one compiled epoch. (Several ranks need ``mpiexec``,
which asv cannot start; their measurements are in docs/distributed.md.)"""

import numpy as np

import loopprop as lp
from loopprop.bench import best_time

from .common import rand


def _comm():
    try:
        from mpi4py import MPI
    except ImportError:
        raise NotImplementedError("mpi4py is not installed (loopprop[dist])") from None
    return MPI.COMM_SELF


def _epoch(dtype, comm):
    X = rand((784, 6400), dtype)
    y = np.random.default_rng(1).integers(0, 10, 6400)
    net = lp.models.mlp(784, [128], 10, dtype=dtype, seed=0)
    kwargs = {} if comm is None else {"comm": comm}
    fn = lambda: net.fit(X, y, epochs=1, batch_size=64, lr=0.01, progress=False,  # noqa: E731
                         **kwargs)
    try:
        fn()
    except TypeError as exc:  # a commit before fit(comm=)
        raise NotImplementedError(str(exc)) from None
    return fn


class DataParallelOneRank:
    params = (["float32", "float64"],)
    param_names = ["dtype"]
    timeout = 300

    def setup(self, dtype):
        self.epoch = _epoch(dtype, _comm())

    def time_epoch(self, dtype):
        self.epoch()


class DataParallelOverhead:
    """The one-rank data-parallel epoch's time over the compiled epoch's (1.0: no price)."""

    unit = "comm=COMM_SELF time / fit time"
    timeout = 600

    def setup(self):
        comm = _comm()
        t = best_time({"dp": _epoch("float64", comm), "fit": _epoch("float64", None)}, 5)
        self.ratio = t["dp"] / t["fit"]

    def track_overhead(self):
        return self.ratio
