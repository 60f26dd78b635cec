"""One training epoch: loopprop's compiled ``fit`` vs the same SGD loop in vectorized NumPy vs
PyTorch eager, for a digits-sized and an MNIST-sized network; cold start; headline ratios."""

import numpy as np

import loopprop as lp
import loopprop.bench
from loopprop import vectorized as vec
from loopprop.bench import best_time

from .common import DTYPES, THREADS, Pinned, rand, torch_or_none

WORKLOADS = {  # name: (layer sizes, batch, examples)
    "digits_64-32-10_b32": ([64, 32, 10], 32, 1797),
    "mnist_784-128-10_b64": ([784, 128, 10], 64, 6400),
}


def _problem(name, dtype):
    sizes, batch, n = WORKLOADS[name]
    X = rand((sizes[0], n), dtype)
    y = np.random.default_rng(1).integers(0, sizes[-1], n)
    return sizes, batch, X, y


def make_epoch(impl, name, dtype):
    """A zero-argument callable running one epoch of ``impl`` (compiled / warmed up)."""
    sizes, batch, X, y = _problem(name, dtype)
    acts = ["relu"] * (len(sizes) - 2) + ["softmax"]
    if impl == "loopprop":
        net = lp.Network(sizes, acts, "cross_entropy", dtype=dtype)
        fn = lambda: net.fit(X, y, epochs=1, batch_size=batch, lr=0.01, shuffle=False,  # noqa
                             progress=False)
    elif impl == "numpy":
        epoch = getattr(vec, "train_epoch_lean", None)
        if epoch is None:
            raise NotImplementedError("this commit predates the lean NumPy baseline")
        params = [(W.copy(), b.copy()) for W, b in
                  lp.Network(sizes, acts, "cross_entropy", dtype=dtype).params]
        fn = lambda: epoch(params, X, y, batch, 0.01, acts)  # noqa: E731
    else:
        torch = torch_or_none()
        if torch is None:
            raise NotImplementedError("torch is not installed")
        tdt = torch.float64 if dtype == "float64" else torch.float32
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b).to(tdt), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        tX, ty = torch.tensor(X.T.copy()), torch.tensor(y)

        def fn():
            for s in range(0, tX.shape[0], batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(tX[s:s + batch]),
                                                  ty[s:s + batch]).backward()
                opt.step()
    fn()
    return fn


class Epoch:
    params = (["loopprop", "numpy", "torch"], list(WORKLOADS), DTYPES, THREADS)
    param_names = ["impl", "workload", "dtype", "threads"]
    timeout = 300

    def setup(self, impl, workload, dtype, threads):
        self.pin = Pinned()
        self.pin.pin(threads)
        if impl == "torch":
            torch = torch_or_none()
            if torch is not None:
                torch.set_num_threads(1 if threads == "1" else 2)
        self.epoch = make_epoch(impl, workload, dtype)

    def teardown(self, *args):
        self.pin.release()

    def time_epoch(self, *args):
        self.epoch()


def _ratio(a, b, rounds=5):
    """Best time of ``a`` over best time of ``b`` (lower is better for loopprop), timed exactly
    as ``loopprop bench`` times them (:func:`loopprop.bench.best_time`): interleaved rounds,
    each turn after a pause and an untimed call, so that one library's spinning worker threads
    do not land in the other's timing. The asv history and ``loopprop bench`` then agree within
    the machine's noise."""
    t = best_time({"a": a, "b": b}, rounds)
    return t["a"] / t["b"]


class Ratios:
    """Headline ratios loopprop time / NumPy time, side by side in one process (lower is
    better; 1.0 is parity). All threads, as a user runs them."""

    unit = "loopprop/numpy time"
    timeout = 600

    def setup(self):
        # the ratios are taken against the lean NumPy baseline and like-for-like elementwise
        # workloads; a commit that predates them shows n/a (asv skips on NotImplementedError)
        # rather than a ratio against a different, slower baseline
        bench = getattr(lp, "bench", None)
        workloads = [getattr(bench, w, None) for w in ("elementwise_workload", "dense_workload")]
        if (getattr(vec, "train_epoch_lean", None) is None
                or any(w is None or "mode" not in w.__code__.co_varnames for w in workloads)):
            raise NotImplementedError("this commit predates the lean NumPy baseline")

    def track_epoch_digits_float64(self):
        return _ratio(make_epoch("loopprop", "digits_64-32-10_b32", "float64"),
                      make_epoch("numpy", "digits_64-32-10_b32", "float64"))

    def track_epoch_mnist_float64(self):
        return _ratio(make_epoch("loopprop", "mnist_784-128-10_b64", "float64"),
                      make_epoch("numpy", "mnist_784-128-10_b64", "float64"))

    def track_epoch_mnist_float32(self):
        return _ratio(make_epoch("loopprop", "mnist_784-128-10_b64", "float32"),
                      make_epoch("numpy", "mnist_784-128-10_b64", "float32"))

    def _dense(self, dtype, mode="alloc"):
        fns = lp.bench.dense_workload(1024, 1024, 256, dtype, mode)
        return _ratio(fns["loopprop"], fns["numpy"])

    def track_dense_1024_float64(self):
        """Both allocate: dense_forward/backward vs NumPy's @."""
        return self._dense("float64")

    def track_dense_1024_float32(self):
        return self._dense("float32")

    def track_dense_1024_float64_out(self):
        """Both write into buffers: loopprop's kernels vs np.matmul(out=)."""
        return self._dense("float64", "out")

    def track_dense_1024_float32_out(self):
        return self._dense("float32", "out")

    def _elementwise(self, name, mode="alloc"):
        fns = lp.bench.elementwise_workload(name, 10**6, "float64", mode)
        return _ratio(fns["loopprop"], fns["numpy"])

    def track_sigmoid_1e6(self):
        """Both allocate: loopprop's public functions vs the NumPy idiom."""
        return self._elementwise("sigmoid")

    def track_tanh_1e6(self):
        return self._elementwise("tanh")

    def track_sigmoid_1e6_out(self):
        """Both write into buffers: loopprop's kernels vs NumPy's ufuncs with out=."""
        return self._elementwise("sigmoid", "out")

    def track_tanh_1e6_out(self):
        return self._elementwise("tanh", "out")


COLD = """
import os, tempfile
{cache}
import numpy as np
import loopprop as lp
net = lp.Network([64, 32, 10], ["relu", "softmax"], "cross_entropy")
X = np.zeros((64, 64)); y = np.zeros(64, dtype=np.int64)
net.fit(X, y, epochs=1, batch_size=32, lr=0.1, progress=False)
"""


class ColdStart:
    """Fresh interpreter: import loopprop and train one epoch, with an empty Numba cache
    (everything compiles) and with the cache filled by a previous run."""

    timeout = 900
    number = 1
    repeat = 3

    def setup(self):
        exec(COLD.format(cache=""))  # fill the cache in the installed package

    def timeraw_import_and_first_epoch_empty_cache(self):
        return COLD.format(cache="os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp()")

    def timeraw_import_and_first_epoch_filled_cache(self):
        return COLD.format(cache="")


class CNN:
    """One training epoch of the digits CNN and of the LeNet-sized CNN, loopprop against the
    lean NumPy epoch (im2col + @) and PyTorch eager (``loopprop.bench.cnn_workload``), and
    conv2d forward + backward alone; all threads. n/a before layers existed."""

    params = (["loopprop", "numpy", "torch"], ["digits", "lenet", "resnet", "conv2d"], DTYPES)
    param_names = ["impl", "workload", "dtype"]
    timeout = 600

    def setup(self, impl, workload, dtype):
        bench = lp.bench
        if not hasattr(bench, "cnn_workload"):
            raise NotImplementedError("this commit has no layers")
        if workload not in getattr(bench, "CNNS", {}) and workload != "conv2d":
            raise NotImplementedError(f"this commit has no {workload} network")
        fns = (bench.conv_workload(dtype) if workload == "conv2d"
               else bench.cnn_workload(workload, dtype))
        if impl not in fns:
            raise NotImplementedError(f"no {impl} implementation here (torch not installed, "
                                      "or this workload has no NumPy row: conv2d alone, resnet)")
        if impl == "torch":
            torch_or_none().set_num_threads(2)
        self.fn = fns[impl]
        self.fn()

    def time_run(self, *args):
        self.fn()


class Norm:
    """Batch norm (training mode) and layer norm, forward + backward, at the issue's shapes
    (loopprop's layout: features first, examples last), against the leanest NumPy and PyTorch
    (``loopprop.bench.norm_workload``); all threads. n/a before normalization existed."""

    params = (["loopprop", "numpy", "torch"], ["batchnorm", "layernorm"],
              ["256x4096", "64x28x28x64"], DTYPES)
    param_names = ["impl", "kind", "shape", "dtype"]
    timeout = 600

    def setup(self, impl, kind, shape, dtype):
        bench = lp.bench
        if not hasattr(bench, "norm_workload"):
            raise NotImplementedError("this commit has no normalization")
        fns = bench.norm_workload(kind, bench.NORM_SHAPES[shape], dtype)
        if impl not in fns:
            raise NotImplementedError("torch not installed")
        if impl == "torch":
            torch_or_none().set_num_threads(2)
        self.fn = fns[impl]
        self.fn()

    def time_run(self, *args):
        self.fn()


class GPT:
    """One GPT training step (forward, backward, AdamW with clipping), loopprop's ``fit_text``
    against the same model in PyTorch eager (``loopprop.bench.gpt_workload``: ``small`` is 4
    layers, 128 wide, T 64, batch 16; ``gpt2`` is GPT-2 small, 124 M parameters, T 64, batch 4,
    about 3 GB each); float32, all threads. A tracked value: the best step of two calls of
    several, each call's first step left out on both sides (its one-time costs:
    ``loopprop.bench.best_step_time``). n/a before the per-step workload (session 7)."""

    params = (["loopprop", "torch"], ["small", "gpt2"])
    param_names = ["impl", "workload"]
    timeout = 1200
    unit = "seconds"

    def setup(self, impl, workload):
        if not hasattr(lp.bench, "best_step_time"):
            raise NotImplementedError("this commit has no per-step GPT workload")
        self.fn, self.warm_up = _step_workload(
            lp.bench.gpt_workload(workload, "float32", steps=4 if workload == "gpt2" else 10),
            impl)

    def track_step_seconds(self, *args):
        # the warm-up call's steps count too (loopprop.bench.best_step_time says why)
        return min(self.warm_up[1:] + self.fn()[1:])


def _step_workload(fns: dict, impl: str):
    """``fns[impl]`` (a function returning the seconds of each of its steps) and the steps of
    a first, warm-up call; asv's n/a when torch is missing."""
    if impl not in fns:
        raise NotImplementedError("torch is not installed")
    if impl == "torch":
        torch_or_none().set_num_threads(2)
    return fns[impl], fns[impl]()


def _warm_workload(name: str, impl: str, missing: str):
    """``loopprop.bench.<name>()[impl]``, called once (compiled, caches warm); asv's
    ``NotImplementedError`` (an n/a cell) when this commit lacks the workload or torch."""
    make = getattr(lp.bench, name, None)
    if make is None:
        raise NotImplementedError(missing)
    fns = make()
    if impl not in fns:
        raise NotImplementedError("torch is not installed")
    if impl == "torch":
        torch_or_none().set_num_threads(2)
    fns[impl]()
    return fns[impl]


class Attention:
    """Causal attention forward + backward (12 heads of 64, T 256, batch 8), loopprop's public
    functions against ``scaled_dot_product_attention`` (``loopprop.bench.attention_workload``);
    float32, all threads. n/a before the GPT."""

    params = (["loopprop", "torch"],)
    param_names = ["impl"]
    timeout = 600

    def setup(self, impl):
        self.fn = _warm_workload("attention_workload", impl, "this commit has no attention")

    def time_step(self, *args):
        self.fn()


class Recurrent:
    """An LSTM layer's forward + backward through time (d 128, hidden 256, T 64, batch 32),
    loopprop's tuned kernels against the lean NumPy LSTM and ``nn.LSTM``
    (``loopprop.bench.lstm_workload``); float32, all threads. n/a before the recurrent
    kernels."""

    params = (["loopprop", "numpy", "torch"],)
    param_names = ["impl"]
    timeout = 600

    def setup(self, impl):
        self.fn = _warm_workload("lstm_workload", impl, "this commit has no recurrent kernels")

    def time_step(self, *args):
        self.fn()


class CharLSTM:
    """One training step of the char-level LSTM (2 layers of 256, T 64, batch 32, AdamW with
    clipping), ``fit_text`` against the same model in PyTorch eager
    (``loopprop.bench.char_rnn_workload``); float32, all threads. Tracked as :class:`GPT`'s
    step. n/a before the recurrent layers."""

    params = (["loopprop", "torch"],)
    param_names = ["impl"]
    timeout = 1200
    unit = "seconds"

    def setup(self, impl):
        make = getattr(lp.bench, "char_rnn_workload", None)
        if make is None:
            raise NotImplementedError("this commit has no recurrent layers")
        self.fn, self.warm_up = _step_workload(make("float32", steps=10), impl)

    def track_step_seconds(self, *args):
        return min(self.warm_up[1:] + self.fn()[1:])


_BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


class UnderLoad:
    """The digits MLP epoch (64-512-10, batch 32, the default of loopprop train) with two busy
    processes beside it, over the same epoch on a quiet machine: worker threads that spin
    while they wait once made it 5-65× slower (goal: at most ~2.5×). ``quiet`` tracks the
    quiet epoch itself (ms), to see that bounding the spin costs nothing there."""

    unit = "ratio or ms"
    timeout = 600
    number = 1
    repeat = 1

    def setup(self):
        X = rand((64, 1438), "float64")
        y = np.random.default_rng(1).integers(0, 10, 1438)
        net = lp.Network([64, 512, 10], ["relu", "softmax"], "cross_entropy")
        self.fit = lambda: net.fit(X, y, epochs=12, batch_size=32, lr=0.02,  # noqa: E731
                                   optimizer="momentum", progress=False)["time"][2:]
        self.fit()  # compiled

    def _median_ms(self):
        return 1e3 * float(np.median(self.fit()))

    def track_quiet_epoch_ms(self):
        return self._median_ms()

    def track_busy_over_quiet(self):
        import subprocess
        import sys

        quiet = self._median_ms()
        busy = [subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=120)])
                for _ in range(2)]
        try:
            loaded = self._median_ms()
        finally:
            for p in busy:
                p.kill()
                p.wait()
        return loaded / quiet


NEW_COMPOSITION = """
import sys, time, numpy as np, loopprop as lp
from loopprop import _compiling
from loopprop.layers import Dense, ReLU, Softmax, Tanh
X, y = np.zeros((8, 16)), np.zeros(16, dtype=np.int64)
lp.Network([8, 6, 3], ["relu", "softmax"], "cross_entropy").fit(X, y, epochs=1, progress=False)
before = _compiling.seconds()
net = lp.Network([Dense(5), Tanh(), Dense(7), ReLU(), Dense(3), Softmax()],
                 loss="cross_entropy", input_shape=(8,))
net.fit(X, y, epochs=1, progress=False)
print(_compiling.seconds() - before)
"""


class CompileTime:
    """Seconds of compiling from an empty Numba cache (a fresh interpreter each): what
    ``loopprop compile --model M`` compiles -- everything ``loopprop train --model M`` needs --
    and a second composition of layer kinds already compiled (none should compile)."""

    timeout = 1800
    number = 1
    repeat = 1
    params = ["mlp", "cnn", "resnet", "gpt"]
    param_names = ["model"]
    unit = "seconds"

    def _run(self, argv):
        import os
        import subprocess
        import sys
        import tempfile

        env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp())
        out = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                             check=True)
        return out.stdout

    def track_cold_compile_seconds(self, model):
        out = self._run(["-m", "loopprop", "compile", "--model", model, "--no-progress"])
        import re

        # "compiled mlp in 41.2 s of compiling (…)"
        return float(re.search(r"in ([0-9.]+) s of compiling", out).group(1))

    def track_new_composition_seconds(self, model):
        if model != "mlp":
            raise NotImplementedError  # asv: skipped for the other parameters
        return float(self._run(["-c", NEW_COMPOSITION]).strip().splitlines()[-1])
