"""Training runs that tests/test_distributed.py starts under ``mpiexec -n N`` (and calls in
its own process with ``comm=None`` for the single-process reference): ten optimizer steps of a
small MLP, CNN, GPT and LSTM in float64.

``wide`` is large enough (five blocks of 2¹⁶ parameters) that every rank updates a slice of
θ of its own. ``python tests/mpi_cases.py CASE,CASE,… OUT-CASE.npy`` trains each CASE on
``MPI.COMM_WORLD`` in one launch; rank 0 checks that every rank holds bitwise the same
parameters (exit status 3 if not) and saves them to OUT with CASE replaced. The case
``mismatch`` gives rank 1 another learning rate: every rank must stop with
``DataParallelError`` (exit status 2, rank 0's message on standard error).
"""

from __future__ import annotations

import sys

import numpy as np

from loopprop import Network, models
from loopprop.layers import Conv2d, Dense, Dropout, Flatten, MaxPool2d, ReLU, Softmax


def _examples(shape, n, classes, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((*shape, n)), rng.integers(0, classes, n)


def mlp(comm, lr=0.01):
    # 289 = 9·32 + 1: the tenth batch has one example, so two of three ranks get none
    X, y = _examples((12,), 289, 4, 0)
    net = models.mlp(12, [16], 4, seed=1)
    net.fit(X, y, epochs=1, batch_size=32, optimizer="adam", lr=lr, seed=2, progress=False,
            comm=comm)
    return net


def wide(comm):
    # 64·1024 + 1024 + 1024·200 + 200 = 271 560 parameters: 5 blocks of 2¹⁶, so every rank
    # of two or three updates a slice of its own (slices forced below the default size), the
    # slices cutting through W^(1) and W^(2); clipping (the global norm across the slices) and
    # weight decay (spans cut by the slices)
    import loopprop.distributed as distributed

    X, y = _examples((64,), 80, 200, 11)
    net = models.mlp(64, [1024], 200, seed=12)
    default, distributed.SLICED_MIN_PARAMS = distributed.SLICED_MIN_PARAMS, 0
    try:
        net.fit(X, y, epochs=1, batch_size=8, optimizer="adamw", lr=0.01, weight_decay=0.1,
                clip_grad_norm=0.5, seed=13, progress=False, comm=comm)
    finally:
        distributed.SLICED_MIN_PARAMS = default
    return net


def cnn(comm):
    # with dropout: each rank draws its examples the masks one process draws them
    X, y = _examples((1, 8, 8), 100, 3, 3)
    net = Network([Conv2d(4, 3), ReLU(), MaxPool2d(2), Flatten(), Dropout(0.25), Dense(3),
                   Softmax()], loss="cross_entropy", input_shape=(1, 8, 8), seed=4)
    net.fit(X, y, epochs=1, batch_size=10, optimizer="momentum", lr=0.05, seed=5,
            progress=False, comm=comm)
    return net


def _ids():
    return np.random.default_rng(6).integers(0, 11, 2000)


def gpt(comm):
    net = models.gpt(11, 8, 2, 2, 16, dtype="float64", seed=7)
    net.fit_text(_ids(), epochs=1, steps_per_epoch=10, batch_size=6, seed=8, progress=False,
                 comm=comm)
    return net


def lstm(comm):
    net = models.char_rnn(11, 12, 1, cell="lstm", block_size=8, n_embd=6, dtype="float64",
                          seed=9)
    net.fit_text(_ids(), epochs=1, steps_per_epoch=10, windows="consecutive", batch_size=5,
                 seed=10, progress=False, comm=comm)
    return net


CASES = {"mlp": mlp, "wide": wide, "cnn": cnn, "gpt": gpt, "lstm": lstm}


def main(cases: list[str], out: str) -> int:
    from mpi4py import MPI

    from loopprop.distributed import DataParallelError

    comm = MPI.COMM_WORLD
    if cases == ["mismatch"]:
        try:
            mlp(comm, lr=0.01 if comm.Get_rank() != 1 else 0.02)
        except DataParallelError as exc:
            if comm.Get_rank() == 0:
                print(exc, file=sys.stderr, flush=True)
            return 2
        return 0
    for case in cases:
        net = CASES[case](comm)
        thetas = comm.gather(net._theta, root=0)
        if comm.Get_rank() == 0:
            if any(not np.array_equal(t, thetas[0]) for t in thetas):
                print(f"{case}: the ranks' parameters differ", file=sys.stderr)
                return 3
            np.save(out.replace("CASE", case), net._theta)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].split(","), sys.argv[2]))
