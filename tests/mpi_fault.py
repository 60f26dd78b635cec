"""``loopprop train`` under ``mpiexec -n 2`` with a fault injected on rank 1 at its 60th step
(the second epoch of the digits MLP), for tests/test_distributed.py:
``python tests/mpi_fault.py MODE TRAIN-ARGS…`` with MODE ``none``, ``raise`` (an exception
in the step), ``nan`` (NaN in the rank's gradient), ``kill`` (the process killed outright) or
``early`` (an error on rank 1 alone before training, while rank 0 waits in a collective call).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import loopprop.distributed as distributed
from loopprop.cli import main

FAULT_STEP = 60


def inject(mode: str) -> None:
    if mode == "early":
        def refuse(self, net, facts):
            raise OSError("injected before training")

        distributed.Ranks.start = refuse
        return
    real = distributed._shard_step
    calls = [0]

    def faulty(*args):
        calls[0] += 1
        out = real(*args)
        if calls[0] == FAULT_STEP:
            if mode == "raise":
                raise ZeroDivisionError("injected on purpose")
            if mode == "nan":
                args[2].grad[5] = np.nan  # the Flat bundle's gradient
                return out[0], out[1], float("nan")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    distributed._shard_step = faulty


if __name__ == "__main__":
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1 and sys.argv[1] != "none":
        inject(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
