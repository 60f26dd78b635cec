"""``loopprop train --data-parallel`` under ``mpiexec -n N`` and ``--resume``: which rank
speaks and writes, how a failure ends the whole job, and continuing from a saved file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._args import CLIError


#: whether this process prints what a run did (False on the ranks other than 0)
_SPEAKS = [True]


def speaks() -> bool:
    """Whether this process reports (rank 0 under ``--data-parallel``, or the only process)."""
    return _SPEAKS[0]


def setup(args: argparse.Namespace) -> Any:
    """``MPI.COMM_WORLD`` for ``--data-parallel`` (else ``None``). Every rank trains; only rank
    0 prints, shows progress, saves and plots: the other ranks' standard output is discarded
    and their ``--save`` / ``--plot`` dropped."""
    if not getattr(args, "data_parallel", False):
        return None
    if args.model == "resnet":
        raise CLIError("--data-parallel: --model resnet normalizes with batch norm over each "
                       "batch, and each process would see only its share: use --model cnn, "
                       "mlp, gpt, lstm, gru or rnn, or train the resnet in one process")
    from ..distributed import world

    try:
        comm = world()
    except ImportError as exc:
        raise CLIError(f"--data-parallel: {exc}") from None
    if comm.Get_rank() != 0:
        _SPEAKS[0] = False
        args.no_progress = True
        args.save = args.plot = None
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return comm


def rank(args: argparse.Namespace) -> int:
    """This process's rank under ``--data-parallel`` (0 otherwise)."""
    if not getattr(args, "data_parallel", False):
        return 0
    from ..distributed import world

    try:
        return world().Get_rank()
    except ImportError:
        return 0


def fail(args: argparse.Namespace, exc: BaseException, status: int) -> int:
    """The end of a command that raised: one line on standard error and ``status``. Under
    ``--data-parallel`` with several ranks, a :class:`~loopprop.distributed.DataParallelError`
    was raised on every rank at the same step (rank 0 prints it, the others leave quietly);
    any other error may have struck this rank alone while the others wait in a collective
    call, so this rank says so and aborts the whole job (``MPI_Abort``): no rank hangs."""
    if not getattr(args, "data_parallel", False):
        print(f"loopprop: error: {exc}", file=sys.stderr)
        return status
    from ..distributed import DataParallelError, world

    try:
        comm = world()
    except ImportError:
        print(f"loopprop: error: {exc}", file=sys.stderr)
        return status
    r, size = comm.Get_rank(), comm.Get_size()
    if isinstance(exc, DataParallelError):
        if r == 0:
            print(f"loopprop: error: {exc}", file=sys.stderr, flush=True)
        return status
    who = "" if r == 0 else f" (rank {r} of {size})"
    print(f"loopprop: error{who}: {exc}", file=sys.stderr, flush=True)
    if size > 1:
        sys.stdout.flush()
        comm.Abort(status)
    return status


def resume(net, path: str | None) -> None:
    """``--resume PATH``: ``net`` (built from this command's options) takes the weights and
    state saved at ``path``, which must hold the same network (the optimizer starts afresh:
    the file holds no optimizer state). Under ``--data-parallel`` rank 0 alone reads the file
    (the other machines need not have it): ``fit`` gives every rank rank 0's weights."""
    if not path or not speaks():
        return
    from ..network import Network

    try:
        saved = Network.load(path)
    except FileNotFoundError:
        raise CLIError(f"--resume: no file {path!r}; give a model written by train "
                       "--save") from None
    if repr(saved) != repr(net) or saved.dtype != net.dtype:
        raise CLIError(f"--resume: {path} holds {saved!r} ({saved.dtype}), but these options "
                       f"build {net!r} ({net.dtype}): give the --model, sizes and --dtype it "
                       "was trained with")
    if "tokenizer" in net.metadata and (json.dumps(saved.metadata.get("tokenizer"), sort_keys=True)
                                        != json.dumps(net.metadata["tokenizer"], sort_keys=True)):
        raise CLIError(f"--resume: {path} was trained on text with other characters; give the "
                       "--text it was trained on")
    net._theta[:] = saved._theta
    net._state[:] = saved._state
    print(f"resuming from {path}", flush=True)
