"""``loopprop train`` (an mlp, cnn or resnet on a dataset; a gpt, lstm, gru or rnn on text) and
``loopprop compile``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .. import models
from . import parallel
from ._args import CLIError, _plural, _score_line, _writable_target


#: ``loopprop train`` options that only some models read: given to another model they are an
#: error, never silently ignored
RECURRENT = tuple(models.CELLS)
TEXT_MODELS = ("gpt", *RECURRENT)
MODEL_ONLY = {"dataset": ("mlp", "cnn", "resnet"), "hidden": ("mlp", *RECURRENT),
              "activation": ("mlp",), "text": TEXT_MODELS, "n_head": ("gpt",),
              **{name: TEXT_MODELS for name in models.GPT_SIZES if name != "n_head"}}


def _cmd_compile(args: argparse.Namespace) -> int:
    from ..ahead import MODELS, compile_models

    if args.all and args.model:
        raise CLIError("--all compiles every model: give --all or --model, not both")
    chosen = list(MODELS) if args.all else list(dict.fromkeys(args.model or ["mlp"]))
    t0 = time.perf_counter()
    total = 0.0
    for model in chosen:
        dtypes = list(dict.fromkeys(args.dtype or ["float32" if model in TEXT_MODELS
                                                   else "float64"]))
        spent = compile_models([model], dtypes, progress=not args.no_progress)
        total += sum(spent.values())
    print(f"compiled {', '.join(chosen)} in {total:.1f} s of compiling "
          f"({time.perf_counter() - t0:.1f} s in all); later runs load the machine code from "
          "Numba's cache")
    return 0


def _refuse_ignored(args: argparse.Namespace) -> None:
    """An option the chosen model does not read is an error (``--text`` without
    ``--model gpt`` once trained the digits MLP and exited 0)."""
    for dest, readers in MODEL_ONLY.items():
        if getattr(args, dest) is not None and args.model not in readers:
            option = "--" + dest.replace("_", "-")
            raise CLIError(f"{option}: not used by --model {args.model}; it applies to "
                           f"--model {' or '.join(readers)}")
    if args.model in RECURRENT:
        if args.hidden is not None and len(args.hidden) != 1:
            raise CLIError(f"--hidden: one size for --model {args.model} (the units of every "
                           f"one of its --n-layer layers), got {'-'.join(map(str, args.hidden))}")
        args.hidden = args.hidden[0] if args.hidden else models.CHAR_RNN_SIZES["hidden"]
    sizes = (models.GPT_SIZES if args.model == "gpt" else
             models.CHAR_RNN_SIZES if args.model in RECURRENT else {})
    for dest, value in sizes.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def _cmd_train(args: argparse.Namespace) -> int:
    from .. import datasets

    _refuse_ignored(args)
    args.comm = parallel.setup(args)
    if args.model in TEXT_MODELS:
        return _train_language_model(args)
    args.dataset = args.dataset or "digits"
    args.activation = args.activation or "relu"
    args.dtype = args.dtype or "float64"
    meta = datasets.info(args.dataset)
    if args.model in ("cnn", "resnet"):
        return _train_cnn(args, meta)
    loss = args.loss or ("cross_entropy" if meta.task == "classification" else "mse")
    # a squared error (regression, or one-hot targets) trains with the regression defaults
    defaults = models.MLP_DEFAULTS["regression" if loss == "mse" else "classification"]
    hidden = args.hidden if args.hidden is not None else defaults["hidden"]
    optimizer = args.optimizer or defaults["optimizer"]
    epochs = args.epochs or defaults["epochs"]
    lr = args.lr if args.lr is not None else (models.ADAM_LR if optimizer in ("adam", "adamw")
                                              else defaults["lr"])
    if meta.task == "regression" and loss != "mse":
        raise CLIError(f"--loss: {args.dataset} is a regression dataset: use --loss mse")
    if loss == "binary_cross_entropy" and meta.n_classes != 2:
        raise CLIError(f"--loss: binary_cross_entropy needs two classes; {args.dataset} has "
                       f"{meta.n_classes}: use cross_entropy")
    save, plot = _outputs(args)
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=args.dtype)
    n_out = {"cross_entropy": meta.n_classes, "binary_cross_entropy": 1}.get(
        loss, meta.n_classes if meta.task == "classification" else 1)
    ytr_fit, yte_fit = ytr, yte
    if loss == "mse" and meta.task == "classification":  # one-hot targets for a squared error
        ytr_fit, yte_fit = (np.eye(n_out, dtype=args.dtype)[:, y] for y in (ytr, yte))
    elif loss == "binary_cross_entropy" or meta.task == "regression":
        ytr_fit, yte_fit = ytr.reshape(1, -1), yte.reshape(1, -1)
    net = models.mlp(Xtr.shape[0], hidden, n_out, activation=args.activation, loss=loss,
                     dtype=args.dtype, seed=args.seed)
    _record_data(net, args.dataset, meta, image=False)
    parallel.resume(net, args.resume)
    print(f"{net!r}\ndataset {args.dataset}: {Xtr.shape[1]} train / {Xte.shape[1]} test "
          f"examples; {optimizer}, lr {lr:g}, batch {args.batch_size or 32}, "
          f"{_plural(epochs, 'epoch')}", flush=True)
    t0 = time.perf_counter()
    opts = _schedule_options(args, epochs)
    hist = _interruptible(net, save, lambda: net.fit(
        Xtr, ytr_fit, epochs=epochs, batch_size=args.batch_size or 32, lr=lr,
        optimizer=optimizer, seed=args.seed, progress=not args.no_progress,
        validation=(Xte, yte_fit), comm=args.comm, **opts))
    elapsed = time.perf_counter() - t0
    print(_score_line(net, Xte, yte, yte_fit, meta.task) + f"  ({elapsed:.2f} s; "
          + _epoch_times(hist["time"], hist["compile_time"]) + ")")
    return _save_and_plot(net, hist, save, plot, f"{args.dataset}: {net!r}")


def _interruptible(net, save: str | None, train):
    """``train()``; on Ctrl-C (which stops fit between two steps) the last complete state goes
    to ``--save`` when it was given, and the message says so either way; exit status 130."""
    try:
        return train()
    except KeyboardInterrupt:
        if not parallel.speaks():  # another rank: rank 0 saves and says so
            raise
        where = net.interrupted or {}
        at = (f" in epoch {where['epoch']}, after {where['steps']} optimizer steps"
              if where else "")
        if save:
            net.save(save)
            print(f"loopprop: interrupted{at}; the last complete state is saved to {save}",
                  file=sys.stderr, flush=True)
        else:
            print(f"loopprop: interrupted{at}; nothing saved (no --save)", file=sys.stderr,
                  flush=True)
        raise


def _record_data(net, dataset: str, meta, image: bool) -> None:
    """What ``predict`` needs to take the dataset's raw examples: the standardization fitted
    on the training split, the task and the classes (stored in the model file's metadata)."""
    from .. import datasets

    net.metadata["preprocessing"] = datasets.preprocessing(dataset, image=image)
    net.metadata["task"] = meta.task
    if meta.task == "classification":
        net.metadata["classes"] = meta.n_classes


def _save_and_plot(net, hist, save, plot, title: str) -> int:
    """The end of a training command: the model to ``--save``, the history to ``--plot``."""
    if save:
        net.save(save)
        print(f"saved {save}")
    if plot:
        from ..plots import plot_history

        plot_history(hist, plot, title=title)
        print(f"plot written to {plot}")
    return 0


def _outputs(args: argparse.Namespace):
    """``--save`` and ``--plot`` checked before any training (a missing directory, no
    matplotlib): ``(save path or None, plot path or None)``."""
    save = _writable_target(args.save, "--save", ".npz") if args.save else None
    plot = _writable_target(args.plot, "--plot", ".png") if args.plot else None
    if plot:
        from ..plots import require_matplotlib

        require_matplotlib()
    return save, plot


def _schedule_options(args: argparse.Namespace, epochs: int, schedule: str = "constant"
                      ) -> dict:
    """``fit``'s weight decay, schedule and clipping options from the command line, checked
    here so that a bad value is one line, not a traceback."""
    opts = {"lr_schedule": args.lr_schedule or schedule, "warmup_epochs": args.warmup_epochs}
    if args.warmup_epochs < 0 or args.warmup_epochs >= epochs and args.warmup_epochs > 0:
        raise CLIError(f"--warmup-epochs: expected a number in [0, {epochs}) (shorter than "
                       f"training), got {args.warmup_epochs:g}")
    if args.weight_decay is not None:
        if not args.weight_decay >= 0 or not np.isfinite(args.weight_decay):
            raise CLIError(f"--weight-decay: expected a number ≥ 0, got {args.weight_decay:g}")
        opts["weight_decay"] = args.weight_decay
    if args.clip_grad_norm is not None:
        if not args.clip_grad_norm > 0 or not np.isfinite(args.clip_grad_norm):
            raise CLIError(f"--clip-grad-norm: expected a number > 0, got "
                           f"{args.clip_grad_norm:g}")
        opts["clip_grad_norm"] = args.clip_grad_norm
    return opts


def _train_cnn(args: argparse.Namespace, meta) -> int:
    from .. import datasets
    from ..network import Network

    name = args.model
    if args.dataset not in datasets.IMAGE_SHAPES:
        raise CLIError(f"--model {name}: {args.dataset} has no images; use --dataset "
                       f"{' or '.join(datasets.IMAGE_SHAPES)}")
    if args.hidden is not None:
        raise CLIError(f"--hidden: the {name}'s layers are fixed (see loopprop train -h); "
                       "--hidden sizes the mlp")
    if args.loss not in (None, "cross_entropy"):
        raise CLIError(f"--loss: the {name} classifies with cross_entropy")
    defaults = (models.CNN_DEFAULTS if name == "cnn" else models.RESNET_DEFAULTS)[args.dataset]
    optimizer = args.optimizer or defaults["optimizer"]
    adam = optimizer in ("adam", "adamw")
    lr = args.lr if args.lr is not None else (defaults["lr"] if adam else 0.02)
    epochs = args.epochs or defaults["epochs"]
    batch = args.batch_size or defaults["batch_size"]
    save, plot = _outputs(args)
    opts = _schedule_options(args, epochs, defaults["schedule"])
    if "weight_decay" not in opts and defaults["weight_decay"] is not None \
            and optimizer == defaults["optimizer"]:
        opts["weight_decay"] = defaults["weight_decay"]
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=args.dtype, image=True)
    n = Xtr.shape[-1]
    if name == "resnet" and n % batch == 1:
        raise CLIError(f"--batch-size: {n} images in batches of {batch} leave a last batch of "
                       "one image, which batch norm cannot normalize; choose another size")
    layers = (models.cnn_layers if name == "cnn" else models.resnet_layers)(args.dataset)
    net = Network(layers, loss="cross_entropy", input_shape=Xtr.shape[:-1], dtype=args.dtype,
                  seed=args.seed)
    _record_data(net, args.dataset, meta, image=True)
    parallel.resume(net, args.resume)
    net.summary()
    print(f"dataset {args.dataset}: {Xtr.shape[-1]} train / {Xte.shape[-1]} test images; "
          f"{optimizer}, lr {lr:g} ({opts['lr_schedule']}), batch {batch}, "
          f"{_plural(epochs, 'epoch')}", flush=True)
    t0 = time.perf_counter()
    hist = _interruptible(net, save, lambda: net.fit(
        Xtr, ytr, epochs=epochs, batch_size=batch, lr=lr, optimizer=optimizer, seed=args.seed,
        progress=not args.no_progress, validation=(Xte, yte), comm=args.comm, **opts))
    elapsed = time.perf_counter() - t0
    print(_score_line(net, Xte, yte, yte, meta.task) + f"  ({elapsed:.2f} s; "
          + _epoch_times(hist["time"], hist["compile_time"]) + ")")
    return _save_and_plot(net, hist, save, plot, f"{args.dataset}: {name}")


def _train_language_model(args: argparse.Namespace) -> int:
    """A character-level GPT (random windows) or recurrent model (consecutive windows carrying
    the states: truncated backpropagation through time) on ``--text``."""
    from .. import text

    gpt = args.model == "gpt"
    if args.loss is not None:
        sizes = "--n-layer, --n-head, --n-embd" if gpt else "--hidden, --n-layer, --n-embd"
        raise CLIError(f"--loss: not used by --model {args.model} (a language model with "
                       f"cross-entropy; size it with {sizes})")
    if gpt and args.n_embd % args.n_head:
        raise CLIError(f"--n-head: n_embd={args.n_embd} is not divisible by n_head="
                       f"{args.n_head}; each head takes n_embd / n_head features")
    defaults = models.GPT_DEFAULTS if gpt else models.CHAR_RNN_DEFAULTS
    optimizer = args.optimizer or "adamw"
    epochs = args.epochs or defaults["epochs"]
    batch = args.batch_size or defaults["batch_size"]
    lr = args.lr if args.lr is not None else defaults["lr"]
    if args.warmup_epochs == 0.0:
        args.warmup_epochs = defaults["warmup_epochs"] if epochs > 1 else 0.0
    opts = _schedule_options(args, epochs, "cosine")
    opts.setdefault("weight_decay", defaults["weight_decay"])
    opts.setdefault("clip_grad_norm", defaults["clip_grad_norm"])
    save, plot = _outputs(args)
    if args.text:
        corpus, source = text.read_text(args.text), args.text
    else:
        corpus, source = text.stdlib_corpus(), "the standard library's .py sources"
    tok = text.CharTokenizer.from_text(corpus)
    ids = tok.encode(corpus)
    train_ids, val_ids = text.split(ids, 0.1)
    T = args.block_size
    if len(train_ids) <= T or len(val_ids) <= T:
        raise CLIError(f"--text: {len(corpus)} characters are too few for windows of "
                       f"--block-size {T} (the last 10% is held out: each part needs more "
                       f"than {T}); use a longer text or a smaller --block-size")
    val_ids = val_ids[:args.val_tokens + 1]
    dtype = args.dtype or "float32"
    if gpt:
        net = models.gpt(tok.vocab_size, T, args.n_layer, args.n_head, args.n_embd, dtype=dtype,
                         seed=args.seed)
        what = f"gpt: {args.n_layer} layers, {args.n_head} heads, n_embd {args.n_embd}, block"
        windows, steps = "random", args.steps_per_epoch
        per_epoch = f"{steps} steps of random windows"
    else:
        streams = (len(train_ids) - 1) // batch
        if streams < T:
            raise CLIError(f"--batch-size: {len(train_ids):,} training characters make "
                           f"{batch} streams of {streams + 1}, shorter than a window of "
                           f"--block-size {T} + 1; use a smaller --batch-size or a longer "
                           "text")
        net = models.char_rnn(tok.vocab_size, args.hidden, args.n_layer, cell=args.model,
                              block_size=T, n_embd=args.n_embd, dtype=dtype, seed=args.seed)
        what = (f"{args.model}: {_plural(args.n_layer, 'layer')} of {args.hidden} units, n_embd "
                f"{args.n_embd}, truncated BPTT over windows of")  # … T tokens
        windows, steps = "consecutive", args.steps_per_epoch
        n = steps or streams // T
        per_epoch = (f"{n} steps of consecutive windows carrying the states"
                     + (" (one pass over the streams)" if steps is None else ""))
    net.metadata["tokenizer"] = tok.to_config()
    net.metadata["text"] = source
    parallel.resume(net, args.resume)
    h = text.unigram_entropy(train_ids, tok.vocab_size)
    print(f"{what} {T}, vocabulary {tok.vocab_size} characters, "
          f"{net.flat_params.size:,} parameters ({net.dtype.name})\ntext: {source}: "
          f"{len(corpus):,} characters ({len(train_ids):,} train / {len(val_ids):,} "
          f"validation); unigram entropy {h:.3f} nats/char\n"
          f"{optimizer}, lr {lr:g} ({opts['lr_schedule']}, warm-up {args.warmup_epochs:g} "
          f"epochs), batch {batch}, {_plural(epochs, 'epoch')} of {per_epoch}", flush=True)
    t0 = time.perf_counter()
    hist = _interruptible(net, save, lambda: net.fit_text(
        train_ids, epochs=epochs, steps_per_epoch=steps, windows=windows, batch_size=batch,
        lr=lr, optimizer=optimizer, seed=args.seed, progress=not args.no_progress,
        validation=val_ids, comm=args.comm, **opts))
    elapsed = time.perf_counter() - t0
    rate = hist["tokens_per_s"]
    compiled = sum(hist["compile_time"])
    print(f"validation loss {hist['val_loss'][-1]:.4f} nats/char (unigram {h:.3f}), train loss "
          f"{hist['loss'][-1]:.4f}  ({elapsed:.1f} s"
          + (f", of which compiling {compiled:.1f} s" if compiled > 0 else "")
          + f"; {rate[-1]:,.0f} tokens/s in the last epoch)")
    return _save_and_plot(net, hist, save, plot, f"{args.model} on {source}")


def _epoch_times(times: list[float], compile_times: list[float] | None = None) -> str:
    """The first epoch (which includes compiling, or loading compiled code) apart from the
    mean of the others."""
    text = f"first epoch {times[0] * 1e3:.1f} ms"
    if compile_times and compile_times[0] > 0:
        text += f" (of which compiling {compile_times[0]:.1f} s)"
    if len(times) > 1:
        rest = times[1:]
        text += f", later epochs {1e3 * sum(rest) / len(rest):.1f} ms on average"
    return text
