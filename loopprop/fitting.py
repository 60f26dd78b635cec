"""Training a :class:`~loopprop.Network`: ``fit`` (minibatches of examples), ``fit_text`` (random
windows of a token corpus), the optimizer :meth:`~Fitting.step` takes, and what every run
shares -- its options checked, its buffers kept between calls, the history, the progress bar,
validation, and the divergence check that names the parameter array at fault.

Each epoch is one compiled call (:mod:`loopprop.train`): this module prepares its arguments and
reads its results; nothing here runs per batch. :class:`Fitting` is a part of ``Network``
(a mixin): it reads the network's plan, buffers and layers.
"""

from __future__ import annotations

import functools
import math
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import _checks, _compiling, _helper
from . import dispatch as _dispatch
from . import distributed as _distributed
from . import interrupt as _interrupt
from . import optimizer as _optim
from . import plan as _plan
from . import progress as _progress
from . import train as _train
from ._jit import threads_for_load, use_threads
from .bundles import Data, Norms, Run
from .kernels.dense import _transpose
from .layers import Embedding

#: fit keeps its transposed copy of X for the next call only up to this size
_KEEP_XT_BYTES = 1 << 24


@functools.lru_cache(maxsize=64)
def _seeds(seed: int, stream: int) -> np.random.SeedSequence:
    """``SeedSequence([seed, stream])``, made once per seed: hashing the entropy took 17 µs of
    every ``fit`` (``default_rng`` of it, 9 µs, draws the same numbers as of ``[seed,
    stream]``; generating a generator's state leaves the sequence as it was)."""
    return np.random.SeedSequence([seed, stream])


class Fitting:
    """``Network``'s training methods (:class:`loopprop.Network` inherits them)."""

    def set_optimizer(self, optimizer: str = "sgd", *, lr: float = 0.1, momentum: float = 0.9,
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                      weight_decay: float | None = None, decay_all: bool = False,
                      clip_grad_norm: float | None = None, lr_schedule: str = "constant",
                      warmup_steps: int = 0, total_steps: int | None = None,
                      step_size: int = 1, lr_gamma: float = 0.1) -> _optim.Optimizer:
        """Choose the optimizer :meth:`step` takes, with fresh state (step count 0, zero
        velocity and moments); the options are :meth:`fit`'s, counted in steps rather than
        epochs: ``warmup_steps`` of linear warm-up, the cosine schedule's ``total_steps``
        (needed for it), the step schedule's ``step_size``. Returns the optimizer (also
        :attr:`optimizer`)."""
        if lr_schedule == "cosine" and total_steps is None:
            raise ValueError("total_steps: the cosine schedule decays to 0 at total_steps; give "
                             "the number of steps you will take")
        total = _checks.check_positive_int(total_steps if total_steps is not None else
                                           max(1, warmup_steps + 1), "total_steps")
        warmup_steps = _checks.check_int(warmup_steps, "warmup_steps", 0, "number of steps")
        o = self._fit_options(
            epochs=total, batch_size=1, lr=lr, optimizer=optimizer, seed=0, momentum=momentum,
            beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, decay_all=decay_all,
            clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule, warmup_epochs=warmup_steps,
            step_epochs=step_size, lr_gamma=lr_gamma)
        state, decay = self._optimizer(o, 1)
        self.optimizer = _optim.Optimizer(state, decay)
        return self.optimizer

    def fit(self, X: Any, y: Any, *, epochs: int = 10, batch_size: int = 32, lr: float = 0.1,
            optimizer: str = "sgd", shuffle: bool = True, seed: int = 0, progress: bool = True,
            validation: tuple[Any, Any] | None = None, momentum: float = 0.9,
            beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
            weight_decay: float | None = None, decay_all: bool = False,
            clip_grad_norm: float | None = None, lr_schedule: str = "constant",
            warmup_epochs: float = 0, step_epochs: int = 10, lr_gamma: float = 0.1,
            parallel: bool = True, comm: Any = None) -> dict[str, list]:
        """Train with minibatches; every epoch runs in one compiled call (no Python per batch).

        Parameters
        ----------
        X : (n_features, n_samples); examples are columns (pass ``X.T`` for rows-as-examples);
            converted to the network's dtype. With ``shuffle`` fit keeps one transposed copy
            of X, so that a shuffled minibatch is gathered as contiguous rows; without, it
            reads X in place.
        y : labels ``(n,)`` or one-hot ``(n_L, n)`` for cross-entropy; ``(n_L, n)`` (or ``(n,)``
            with one output) for mse and binary cross-entropy
        epochs, batch_size, lr : the loop; the last partial batch is used, not dropped
        optimizer : ``"sgd"``, ``"momentum"`` (``momentum`` = β in [0, 1); PyTorch's SGD with
            momentum: ``v ← βv + g``, ``θ ← θ − ηv``), ``"adam"`` or ``"adamw"`` (``beta1``,
            ``beta2`` in [0, 1), ``eps`` > 0)
        weight_decay : λ ≥ 0. For ``"adamw"`` decoupled, ``θ ← θ(1 − ηλ)`` before each step
            (default 0.01, as ``torch.optim.AdamW``); for the others L2 added to the gradient,
            ``g ← g + λθ`` (default 0, as ``torch.optim.SGD``/``Adam``). Only weights decay:
            biases and normalization gains and shifts are excluded, as common practice does
            (each layer's :meth:`~loopprop.layers.base.Layer.decays`); ``decay_all=True``
            decays every parameter (PyTorch's behaviour when all parameters form one group)
        clip_grad_norm : c > 0 clips the gradient's global norm before each step:
            ``g ← g·min(1, c/(‖g‖ + 10⁻⁶))``, as ``torch.nn.utils.clip_grad_norm_``
        lr_schedule : the rate of every step (per batch, inside the compiled epoch):
            ``"constant"``, ``"step"`` (× ``lr_gamma`` every ``step_epochs`` epochs after the
            warm-up) or ``"cosine"`` (from ``lr`` to 0 over the steps after the warm-up);
            ``warmup_epochs`` (may be fractional) ramps linearly up to ``lr`` first: step ``t``
            (0-based) of the ``W`` warm-up steps uses ``lr·(t + 1)/W``
        shuffle, seed : reshuffle the examples each epoch from ``seed`` (same seed, same thread
            count: bitwise-identical weights)
        progress : show a progress bar over epochs with the running loss
        validation : optional ``(X_val, y_val)`` evaluated after every epoch
        parallel : let the kernels use Numba's threads (with ``comm``: this machine's cores
            shared between its ranks)
        comm : an mpi4py communicator (``MPI.COMM_WORLD`` under ``mpiexec -n N``) for
            data-parallel training (:mod:`loopprop.distributed`; ``pip install
            "loopprop[dist]"``): every rank calls fit with the same network, data and
            options; each computes its share of every batch of ``batch_size`` and the
            gradients are summed across the ranks before the same update everywhere, so the
            results do not depend on the number of ranks (to rounding). Only rank 0 shows
            progress; validation is split between the ranks. Batch norm is refused (its
            statistics would be per rank). ``None`` (default): this process alone

        Returns
        -------
        history : dict of per-epoch lists: ``loss``, ``accuracy`` (classification), ``val_loss``,
            ``val_accuracy`` (with validation), ``grad_norm`` (mean ‖dW^(l)‖ per layer, before
            clipping), ``lr`` (the rate of the epoch's last step), ``time`` (seconds),
            ``compile_time`` (of which compiling the kernels: a first epoch without a cache);
            and ``grad_norms``, a dict from every parameter array, named ``"row:Kind.name"``
            (``"3:BatchNorm.gamma"``, ``"4:CausalSelfAttention.W_qkv"``), to its per-epoch mean
            gradient norm ``‖∂L/∂θ‖`` (before clipping).

        ``fit`` trains in training mode and leaves the network's mode as it found it.
        """
        o = self._fit_options(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            momentum=momentum, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decay_all=decay_all, clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=step_epochs, lr_gamma=lr_gamma)
        X = self.check_inputs(X)
        n = X.shape[1]
        Yf, labels, one_hot = self.check_targets(y, n, "y")
        val = self._check_validation(validation)
        ranks = self._data_parallel(comm, parallel)
        bs = min(o.batch_size, n)
        self._check_batch_norm_batch(bs, "batch_size")
        if n % bs:
            self._check_batch_norm_batch(n % bs, f"the last batch ({n} examples, batch_size "
                                         f"{bs}); batch_size")
        n_batches = -(-n // bs)
        buf = self._fit_buffers(ranks.largest_shard(bs) if ranks else bs)
        opt, decay = self._optimizer(o, n_batches)
        perm = np.arange(n, dtype=np.int64)
        flat, losses = self._fit_bundles(buf, Yf.shape[0] * bs, labels.shape[0] * bs)
        o.threads = ranks.threads if ranks else use_threads(parallel)
        rng = np.random.default_rng(o.seed) if shuffle else None
        scratch = self._fit_scratch
        if shuffle:  # one example per row: a shuffled minibatch's gather copies rows
            XT = scratch.get("XT")
            if XT is None or XT.shape[0] != n:
                XT = scratch["XT"] = np.empty((n, self.input_size), self.dtype)
            _transpose(XT, X)
            data = Data(XT, Yf, labels, perm, one_hot, True)
        else:  # in order: each batch is a block of X's columns, read in place
            XT = None
            data = Data(X, Yf, labels, perm, one_hot, False)
        optim = opt.bundle(decay)  # the same for every epoch

        def epoch(gnorm, dropout_seed, stop, threads):
            shuffle_seed = int(rng.integers(0, 2**31 - 1)) if rng is not None else -1
            if ranks is not None:
                return _distributed.fit_epoch(
                    self, ranks, flat, optim, opt, losses, data,
                    Norms(self._norm_spans, gnorm), n, bs, shuffle_seed, dropout_seed, stop,
                    threads, self._table())
            args = (self._plan, self._fplan, flat, optim, opt.t, losses, data,
                    Norms(self._norm_spans, gnorm),
                    Run(bs, shuffle_seed, dropout_seed, threads, 0),
                    stop)
            return _train._train_epoch(*args, self._table_beside(_train._train_epoch, args))

        per_example = n * (self.output_size if self.loss == "binary_cross_entropy" else
                           labels.shape[0])  # every output position of a sequence counts
        if ranks is not None:
            ranks.start(self, {"examples": n, "batch_size": bs, "epochs": o.epochs,
                               "seed": o.seed, "shuffle": shuffle, "optimizer": o.optimizer,
                               "lr": o.lr, "X sum": float(X.sum(dtype=np.float64))})
            if val is not None:
                val = _distributed.evaluator(self, ranks, *val)
        try:
            return self._epochs(o, epoch, opt, n, per_example, n_batches, val, progress,
                                ranks=ranks)
        finally:
            if XT is not None and XT.nbytes > _KEEP_XT_BYTES:
                scratch.pop("XT", None)  # a large copy of the data is not worth keeping

    def fit_text(self, ids: Any, *, epochs: int = 10, steps_per_epoch: int | None = None,
                 windows: str = "random", batch_size: int = 16, lr: float = 1e-3,
                 optimizer: str = "adamw", seed: int = 0, progress: bool = True,
                 validation: Any = None, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                 weight_decay: float | None = 0.1, decay_all: bool = False,
                 clip_grad_norm: float | None = 1.0, lr_schedule: str = "cosine",
                 warmup_epochs: float = 0, parallel: bool = True,
                 comm: Any = None) -> dict[str, list]:
        """Train a language model (an :class:`~loopprop.layers.Embedding` first, one
        distribution per position last: :func:`loopprop.models.gpt`) on a corpus of token ids.

        Each step takes ``batch_size`` windows of ``T`` tokens *inside the compiled epoch*: the
        inputs are ``ids[s : s + T]``, the labels the next token at each position,
        ``ids[s + 1 : s + T + 1]``. An epoch is ``steps_per_epoch`` steps, in one compiled call.

        Parameters
        ----------
        ids : 1-D integer token ids (:meth:`loopprop.text.CharTokenizer.encode`), longer than
            the block ``T``
        windows : ``"random"``: every window at a random offset (loopprop's own generator,
            seeded from ``seed`` and the epoch); ``"consecutive"``: truncated backpropagation
            through time -- the corpus is cut into ``batch_size`` streams and each step takes
            the next window of every stream, a recurrent model starting from the states the
            previous window ended with (the gradient stops at the window's start, as
            PyTorch's ``h.detach()``); the streams go on from epoch to epoch, and start again
            from their beginnings and zero states after a whole pass (and in every call)
        steps_per_epoch : steps per epoch; by default 100 random windows, or one pass over the
            streams (``(n − 1) // (batch_size·T)`` steps) with consecutive windows
        validation : optional 1-D ids held out; after every epoch the mean loss per token
            (``val_loss``, in nats) over its non-overlapping windows from zero states -- or,
            with consecutive windows, read as the training reads: ``batch_size`` streams (fewer
            when it is short), window after window, the states carried
        optimizer, lr, beta1, beta2, eps, weight_decay, decay_all, clip_grad_norm,
        lr_schedule, warmup_epochs : as :meth:`fit`; the defaults are GPT training's (AdamW,
            β₂ = 0.95, λ = 0.1 on the weight matrices and token embedding, clipping at 1,
            cosine schedule)
        parallel, comm : as :meth:`fit`: with ``comm`` each rank takes its share of every
            step's ``batch_size`` windows (every rank draws all the offsets from the same
            stream and keeps its own; consecutive windows keep their streams on one rank)

        Returns
        -------
        history : per-epoch lists ``loss``, ``accuracy`` (next-token accuracy over every
            position), ``val_loss`` (with validation), ``grad_norm``, ``grad_norms``, ``lr``,
            ``time`` (seconds per epoch), ``compile_time`` (of which compiling: a first epoch
            compiles its kernels unless they are cached) and ``tokens_per_s`` (training
            positions per second, compiling left out).
        """
        o = self._fit_options(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            momentum=0.9, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decay_all=decay_all, clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=1, lr_gamma=0.1)
        _checks.check_choice(windows, "windows", ("random", "consecutive"))
        T = self.check_language_model("fit_text")
        corpus = self._check_ids(ids, "ids", T + 1)
        ranks = self._data_parallel(comm, parallel)
        bs = o.batch_size
        consecutive = windows == "consecutive"
        per_stream = (corpus.shape[0] - 1) // bs
        if consecutive and per_stream < T:
            raise ValueError(f"ids: windows='consecutive' cuts the corpus into batch_size={bs} "
                             f"streams of at least T + 1 = {T + 1} tokens each, but "
                             f"{corpus.shape[0]} tokens give {per_stream + 1}: use a smaller "
                             f"batch_size (at most {(corpus.shape[0] - 1) // T}) or more text")
        if steps_per_epoch is None:
            steps = per_stream // T if consecutive else 100
        else:
            steps = _checks.check_positive_int(steps_per_epoch, "steps_per_epoch")
        val: Any = None
        if validation is not None:
            held = self._check_ids(validation, "validation", T + 1)
            if consecutive:
                val = lambda: self._stream_loss(held, bs, T)  # noqa: E731
            else:
                X_val, Y_val = self._windows(held, T)
                val = (self.check_inputs(X_val, "validation"),
                       *self.check_targets(Y_val, X_val.shape[1], "validation"))
        buf = self._fit_buffers(ranks.largest_shard(bs) if ranks else bs)
        opt, decay = self._optimizer(o, steps)
        Ybuf = np.zeros(1, self.dtype)
        labbuf = np.zeros(T * bs, np.int64)
        o.threads = ranks.threads if ranks else use_threads(parallel)
        window_rng = np.random.default_rng(_seeds(o.seed, 2))
        flat, optim = self._flat(buf), opt.bundle(decay)  # the same for every epoch
        losses = self._losses(Ybuf, labbuf, buf)

        def epoch(gnorm, dropout_seed, stop, threads):
            if ranks is not None:
                return _distributed.text_epoch(
                    self, ranks, flat, optim, opt, losses, corpus, steps, bs,
                    -1 if consecutive else int(window_rng.integers(0, 2**62)), dropout_seed,
                    stop, Norms(self._norm_spans, gnorm), threads, self._table())
            args = (self._plan, self._fplan, flat, optim, opt.t, losses, corpus, steps,
                    Norms(self._norm_spans, gnorm),
                    Run(bs, -1 if consecutive else int(window_rng.integers(0, 2**62)),
                        dropout_seed, threads, opt.t), stop)  # opt.t: this call's steps so far
            return _train._train_text_epoch(*args,
                                            self._table_beside(_train._train_text_epoch, args))

        if ranks is not None:
            ranks.start(self, {"tokens": corpus.shape[0], "batch_size": bs, "epochs": o.epochs,
                               "steps": steps, "windows": windows, "seed": o.seed,
                               "optimizer": o.optimizer, "lr": o.lr,
                               "ids sum": int(corpus.sum())})
            if isinstance(val, tuple):
                val = _distributed.evaluator(self, ranks, *val)
        return self._epochs(o, epoch, opt, steps * bs, steps * bs * T, steps, val, progress,
                            tokens=steps * bs * T, ranks=ranks)

    def _fit_options(self, *, epochs, batch_size, lr, optimizer, seed, momentum, beta1, beta2,
                     eps, weight_decay, decay_all, clip_grad_norm, lr_schedule, warmup_epochs,
                     step_epochs, lr_gamma) -> SimpleNamespace:
        """fit's options, each checked (a clear error names the argument)."""
        epochs = _checks.check_positive_int(epochs, "epochs")
        batch_size = _checks.check_positive_int(batch_size, "batch_size")
        lr = _checks.check_lr(lr)
        _checks.check_choice(optimizer, "optimizer", tuple(_train.OPTIMIZERS))
        seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
        momentum = _checks.check_fraction(momentum, "momentum", 0.0, 1.0,
                                          example=" such as 0.9 (the velocity's decay β)")
        beta1 = _checks.check_fraction(beta1, "beta1", 0.0, 1.0,
                                       example=" such as 0.9 (Adam's first-moment decay)")
        beta2 = _checks.check_fraction(beta2, "beta2", 0.0, 1.0,
                                       example=" such as 0.999 (Adam's second-moment decay)")
        eps = _checks.check_fraction(eps, "eps", 0.0, math.inf, lo_open=True,
                                     example=" such as 1e-8 (Adam's denominator guard)")
        if weight_decay is None:
            weight_decay = 0.01 if optimizer == "adamw" else 0.0
        weight_decay = _checks.check_fraction(weight_decay, "weight_decay", 0.0, math.inf,
                                              example=" such as 1e-4 (the decay's strength λ)")
        if not isinstance(decay_all, bool):
            raise TypeError(f"decay_all: expected True or False, got "
                            f"{_checks._describe(decay_all)}")
        clip = 0.0
        if clip_grad_norm is not None:
            clip = _checks.check_fraction(clip_grad_norm, "clip_grad_norm", 0.0, math.inf,
                                          lo_open=True,
                                          example=" such as 1.0 (the largest gradient norm)")
        _checks.check_choice(lr_schedule, "lr_schedule", ("constant", "step", "cosine"))
        warmup_epochs = _checks.check_fraction(warmup_epochs, "warmup_epochs", 0.0, math.inf,
                                               example=" such as 1 (epochs of linear warm-up)")
        if warmup_epochs >= epochs and warmup_epochs > 0:
            raise ValueError(f"warmup_epochs: the warm-up ({warmup_epochs:g} epochs) must be "
                             f"shorter than training (epochs={epochs}); use fewer warm-up "
                             "epochs or more epochs")
        step_epochs = _checks.check_positive_int(step_epochs, "step_epochs")
        lr_gamma = _checks.check_fraction(lr_gamma, "lr_gamma", 0.0, 1.0, lo_open=True,
                                          hi_open=False,
                                          example=" such as 0.1 (the step schedule's factor)")
        return SimpleNamespace(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            beta=momentum if optimizer == "momentum" else beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decay_all=decay_all, clip=clip, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=step_epochs, lr_gamma=lr_gamma)

    def _data_parallel(self, comm: Any, parallel: bool):
        """The ranks of a data-parallel fit (:class:`loopprop.distributed.Ranks`), or ``None``
        without a communicator."""
        if comm is None:
            return None
        ranks = _distributed.Ranks(comm, use_threads(parallel))
        _distributed.check_layers(self)
        return ranks

    def _check_validation(self, validation):
        if validation is None:
            return None
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise TypeError("validation: expected a pair (X_val, y_val)")
        Xv = self.check_inputs(validation[0], "validation X")
        return (Xv, *self.check_targets(validation[1], Xv.shape[1], "validation y"))

    def _fit_buffers(self, bs: int):
        """The batch buffers for batches of ``bs``, kept between fit calls."""
        buf = self._fit_scratch.get("buffers")
        if buf is None or buf.m != bs:
            buf = self._fit_scratch["buffers"] = _plan.Buffers(self._layout, bs, self.dtype)
        return buf

    def _fit_bundles(self, buf, n_targets: int, n_labels: int):
        """``(flat, losses)`` for ``buf``'s batches with room for ``n_targets`` target values
        and ``n_labels`` labels: kept between fit calls with the buffers (new bundles are typed
        afresh by Numba at every call, half a µs a field)."""
        kept = self._fit_scratch.get("bundles")
        if (kept is None or kept[0] is not buf or kept[1] != (n_targets, n_labels)
                or kept[2].theta is not self._theta or kept[2].state is not self._state):
            losses = self._losses(np.zeros(n_targets, self.dtype),
                                  np.zeros(n_labels, np.int64), buf)
            kept = self._fit_scratch["bundles"] = (buf, (n_targets, n_labels), self._flat(buf),
                                                   losses)
        return kept[2], kept[3]

    def _optimizer(self, o, n_batches: int):
        """The optimizer's state for ``o.epochs`` epochs of ``n_batches`` steps, and the
        ranges where weight decay applies."""
        opt = _train.OptimizerState(
            o.optimizer, self._theta.size, self.dtype, o.lr, o.beta, o.beta2, o.eps,
            o.weight_decay, o.clip, o.lr_schedule,
            warmup=int(round(o.warmup_epochs * n_batches)), total=o.epochs * n_batches,
            step_size=o.step_epochs * n_batches, gamma=o.lr_gamma)
        return opt, self._decay_spans(o.decay_all)

    def _epochs(self, o, epoch, opt, n: int, per_example: int, n_batches: int, val,
                progress: bool, tokens: int = 0, ranks=None) -> dict[str, list]:
        """Run ``epoch(gnorm, dropout_seed)`` (one compiled epoch, returning ``(Σ loss × batch
        size, correct, step count, last rate)``) ``o.epochs`` times: the history, the progress
        bar, validation and the divergence check. With ``tokens`` (positions per epoch) the
        history and the bar report tokens per second. With ``ranks`` (data-parallel) only
        rank 0 shows the bar, and Numba's threads are the rank's share while it runs."""
        if ranks is None:
            return self._run_epochs(o, epoch, opt, n, per_example, n_batches, val, progress,
                                    tokens)
        with _distributed.Threads(ranks.threads):
            return self._run_epochs(o, epoch, opt, n, per_example, n_batches, val,
                                    progress and ranks.rank == 0, tokens)

    def _run_epochs(self, o, epoch, opt, n: int, per_example: int, n_batches: int, val,
                    progress: bool, tokens: int) -> dict[str, list]:
        """:meth:`_epochs`'s loop."""
        self.interrupted = None
        bad = self._nonfinite_arrays(self._theta)
        if bad:  # before the first step: the array at fault, not those it spreads to
            raise FloatingPointError(
                f"the parameters of layer {bad[0][0]} ({bad[0][1]}) hold NaN or Inf before "
                "training: set them to finite values (net.params, or a new Network)")
        classify = self.loss != "mse"
        hist: dict[str, Any] = {"loss": [], "grad_norm": [], "lr": [], "time": [],
                                "compile_time": [],
                                "grad_norms": {name: [] for name in self._param_names}}
        if tokens:
            hist["tokens_per_s"] = []
        if classify:
            hist["accuracy"] = []
        if val is not None:
            hist["val_loss"] = []
            if classify:
                hist["val_accuracy"] = []
        bar = _progress.Progress(o.epochs, progress)
        # dropout masks: their own stream of seeds, so that shuffle=False keeps them random
        # (none for a network that draws nothing: making the generator took 9–17 µs a fit)
        drop_rng = (np.random.default_rng(_seeds(o.seed, 1))
                     if any(layer.random_in_training() for layer in self._rows) else None)
        try:
            for e in range(1, o.epochs + 1):
                t0, c0 = time.perf_counter(), _compiling.seconds()
                gnorm = np.zeros(len(self._norm_spans), np.float64)
                dropout_seed = int(drop_rng.integers(0, 2**31 - 1)) if drop_rng is not None else 0
                stop = np.zeros(1, np.int64)
                try:
                    total, correct, opt.t, last_lr = _interrupt.run(
                        functools.partial(epoch, gnorm, dropout_seed, stop,
                                          threads_for_load(o.threads)), stop)
                except _interrupt.Interrupted as exc:  # Ctrl-C: stopped between two steps
                    if exc.result is not None:
                        opt.t = int(exc.result[2])
                    self.interrupted = {"epoch": e, "steps": opt.t}
                    raise KeyboardInterrupt from None
                hist["time"].append(time.perf_counter() - t0)
                hist["compile_time"].append(_compiling.seconds() - c0)
                hist["lr"].append(float(last_lr))
                hist["loss"].append(total / n)
                norms = gnorm / n_batches
                hist["grad_norm"].append([float(norms[a]) for a in self._first_arrays])
                for name, value in zip(self._param_names, norms):
                    hist["grad_norms"][name].append(float(value))
                info = {"loss": total / n}
                if tokens:
                    # the rate of training, not of compiling (a first epoch compiles)
                    run = max(hist["time"][-1] - hist["compile_time"][-1], 1e-9)
                    hist["tokens_per_s"].append(tokens / run)
                    info["tok/s"] = hist["tokens_per_s"][-1]
                if classify:
                    hist["accuracy"].append(correct / per_example)
                    info["acc"] = correct / per_example
                if val is not None:
                    ev = val() if callable(val) else self.evaluate_checked(*val)
                    hist["val_loss"].append(ev["loss"])
                    info["val_loss"] = ev["loss"]
                    if classify:
                        hist["val_accuracy"].append(ev["accuracy"])
                        info["val_acc"] = ev["accuracy"]
                self._check_diverged(e, total / n, o.lr)
                bar.update(e, info)
        finally:
            bar.close()
        self.history = hist
        return hist

    def _table_beside(self, epoch, args: tuple):
        """:meth:`_table`; when ``epoch`` is neither compiled nor cached for ``args`` and a
        table, a second process compiles it meanwhile and shares the rows with this one
        (loopprop/_helper.py: the first epoch compiles on two cores)."""
        if not _helper.enabled():
            return self._table()
        epoch_job = _helper.epoch_job(epoch, (*args, _dispatch.table((), self.dtype)))
        if epoch_job is None:  # the epoch is compiled or cached: load it
            return self._table()
        rows = [_helper.row_job(fn, self.dtype, decode) for fn, decode
                in _dispatch.row_functions(self._plan[:, _plan.KIND])]
        helper = _helper.start([*rows, epoch_job])  # the epoch last: the helper's first
        if helper is None:
            return self._table()
        try:
            for job in rows:
                if helper.claim(job):
                    _helper.run(job)
        finally:
            helper.join()
        return self._table()

    def check_language_model(self, what: str) -> int:
        """``T`` for a language model (token ids in, a distribution per position out); a
        ``TypeError`` naming ``what`` for any other network."""
        if not (isinstance(self._rows[0], Embedding) and len(self.output_shape) == 2
                and self.loss == "cross_entropy"):
            raise TypeError(f"{what}: needs a language model (an Embedding first, a "
                            "distribution per position last, cross-entropy): build one with "
                            "loopprop.models.gpt")
        return self.input_shape[0]

    def _check_ids(self, ids: Any, name: str, minimum: int) -> np.ndarray:
        """A 1-D corpus of token ids in the embedding's vocabulary, at least ``minimum`` long."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array of token ids (a corpus), got shape "
                             f"{arr.shape}")
        if arr.shape[0] < minimum:
            raise ValueError(f"{name}: {arr.shape[0]} tokens are too few for windows of "
                             f"{minimum - 1} tokens and their next tokens (at least {minimum} "
                             "needed); use a longer text or a smaller block_size")
        self._rows[0].check_input(arr, name, self.dtype)
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _stream_loss(self, ids: np.ndarray, streams: int, T: int) -> dict[str, float]:
        """The mean loss per token and the next-token accuracy over ``ids`` read as
        ``streams`` streams (fewer when ``ids`` is short), window after window of ``T``, in
        evaluation mode, the recurrent states carried from window to window as
        ``fit_text(windows="consecutive")`` trains (a network sharing this one's parameters
        runs it: this one's buffers are left alone)."""
        streams = max(1, min(streams, (ids.shape[0] - 1) // T))
        L = (ids.shape[0] - 1) // streams
        reader = self._fit_scratch.get("stream_reader")
        if reader is None or reader.flat_params is not self._theta:
            reader = self._fit_scratch["stream_reader"] = self.sharing((T,)).eval()
        starts = np.arange(streams) * L
        t = np.arange(T)[:, None]
        total, correct, count = 0.0, 0, 0
        for w in range(L // T):
            at = starts[None, :] + w * T + t  # (T, streams)
            Z = reader.forward(ids[at], logits=True, carry=w > 0).astype(np.float64)
            labels = ids[at + 1]  # Z (V, T, streams): the loss is log Σ_v e^{Z_v} − Z_label
            top = Z.max(axis=0)
            lse = top + np.log(np.exp(Z - top).sum(axis=0))
            total += float((lse - np.take_along_axis(Z, labels[None], axis=0)[0]).sum())
            correct += int((Z.argmax(axis=0) == labels).sum())
            count += labels.size
        return {"loss": total / count, "accuracy": correct / count}

    @staticmethod
    def _windows(ids: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-overlapping windows of ``ids``: inputs and next tokens, ``(T, n)`` each."""
        n = (ids.shape[0] - 1) // T
        X = ids[:n * T].reshape(n, T).T
        Y = ids[1:n * T + 1].reshape(n, T).T
        return np.ascontiguousarray(X), np.ascontiguousarray(Y)

    def _nonfinite_arrays(self, flat: np.ndarray) -> list[tuple[int, str]]:
        """``(l, "row:Kind.name")`` of every parameter array of ``flat`` (:attr:`_theta` or
        :attr:`_grad`) holding NaN or Inf, in plan order; ``l`` counts parameterized layers
        from 1, as ``W^(l)`` does."""
        if _checks.all_finite(flat):  # the usual case in one pass, not one per array
            return []
        bad, layer = [], 0
        for i, (name, (off, size)) in enumerate(zip(self._param_names, self._norm_spans)):
            layer += i in self._first_arrays
            if not np.isfinite(flat[off:off + size]).all():
                bad.append((layer, name))
        return bad

    def _check_diverged(self, epoch: int, loss: float, lr: float) -> None:
        """Raise ``FloatingPointError`` when the loss, a parameter or a gradient is NaN or Inf
        after ``epoch``, naming the first parameter array that holds one in plan order (the
        forward pass meets it first), else the last gradient in plan order (the backward pass
        computes it first). Any layer kind: every parameter array is named by
        ``"row:Kind.name"``.

        The loss alone is not enough: a NaN weight can hide behind a finite loss (an output
        that does not depend on it, or an activation that maps it away)."""
        bad_theta = not _checks.all_finite(self._theta)
        bad_grad = not _checks.all_finite(self._grad)
        if math.isfinite(loss) and not bad_theta and not bad_grad:
            return
        where = ""
        bad = self._nonfinite_arrays(self._theta)
        if bad:  # the first in plan order: the forward pass met it first
            where = f"; the parameters of layer {bad[0][0]} ({bad[0][1]}) hold NaN or Inf"
        else:
            bad = self._nonfinite_arrays(self._grad)
            if bad:  # the last in plan order: the backward pass computed it first
                where = (f"; the gradients of layer {bad[-1][0]} ({bad[-1][1]}) went NaN or Inf "
                         "first (the backward pass runs from the output back)")
        raise FloatingPointError(
            f"training diverged at epoch {epoch}: the training loss is {loss:g}{where}. The "
            f"learning rate lr={lr:g} is probably too large; try lr={lr / 10:g}"
        )
