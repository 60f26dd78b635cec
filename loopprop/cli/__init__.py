"""The ``loopprop`` command: train, compile, evaluate, predict, sample, explain, diagram, bench.

Every error prints one line, ``loopprop: error: …``, and exits with status 2. The commands live
by what they do: :mod:`~loopprop.cli.train` (train, compile), :mod:`~loopprop.cli.use`
(evaluate, predict, sample), :mod:`~loopprop.cli.study` (explain, diagram, bench); the options in
:mod:`~loopprop.cli.parser`.
"""

from __future__ import annotations

import sys
from typing import Sequence

from . import parallel
from ._args import CLIError
from .parser import build_parser
from .study import _cmd_bench, _cmd_diagram, _cmd_explain
from .train import _cmd_compile, _cmd_train
from .use import _cmd_evaluate, _cmd_predict, _cmd_sample


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {"train": _cmd_train, "sample": _cmd_sample, "evaluate": _cmd_evaluate,
                "predict": _cmd_predict,
                "explain": _cmd_explain, "diagram": _cmd_diagram, "bench": _cmd_bench,
                "compile": _cmd_compile}
    import contextlib

    from .. import _compiling

    # a first run says when it compiles, and for how long (``compile`` names each step itself)
    # (rank 0 alone under --data-parallel: every rank compiles the same kernels)
    quiet = args.command == "compile" or parallel.rank(args) != 0
    notices = contextlib.nullcontext() if quiet else _compiling.notices()
    try:
        with notices:
            return commands[args.command](args)
    except KeyboardInterrupt:
        if parallel.rank(args) == 0:
            print("loopprop: interrupted", file=sys.stderr, flush=True)
        if _compiling.WATCH.compiling():
            # a worker thread is inside Numba's compiler: leave without the interpreter's
            # shutdown, which could meet it holding LLVM's locks
            sys.stdout.flush()
            import os

            os._exit(130)
        return 130
    except (CLIError, ValueError, TypeError, ImportError, OSError, FloatingPointError,
            RuntimeError) as exc:
        return parallel.fail(args, exc, 2)


__all__ = ["CLIError", "build_parser", "main"]
