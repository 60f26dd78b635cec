"""loopprop: backpropagation as explicit loops over neurons and batch items, compiled with Numba.

Every gradient formula of ``docs/formulas.md`` (one section per layer kind, §3–§14 for the
dense network) is a loop you can read, ``dW[i, j] += dZ[i, k] * A_prev[j, k]``, running at
compiled speed. Examples are columns (the last axis): ``W (n_out, n_in)``, ``b (n_out,)``,
``A (n, m)``.
"""

from .kernels.activations import activation_backward, activation_forward
from .kernels.attention import (attention_backward, attention_forward, embedding_backward,
                                embedding_forward)
from .kernels.conv import conv2d_backward, conv2d_forward
from .kernels.dense import dense_backward, dense_forward
from .kernels.dropout import dropout_backward, dropout_forward
from .kernels.losses import mse_loss, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .kernels.neuron import neuron_step
from .kernels.norm import (batchnorm_backward, batchnorm_forward, layernorm_backward,
                           layernorm_forward)
from .kernels.optim import sgd_update
from .kernels.recurrent import (gru_backward, gru_forward, lstm_backward, lstm_forward,
                                 rnn_backward, rnn_forward)
from .kernels.pool import (avgpool2d_backward, avgpool2d_forward, maxpool2d_backward,
                           maxpool2d_forward)
from .explain import explain  # the function; the module is loopprop.explain in sys.modules
from .gradcheck import gradcheck
from .network import ModelFileError, Network

from . import datasets, vectorized  # noqa: E402 - light modules, reachable as lp.datasets

__version__ = "0.2.0"

#: modules loaded on first use (``lp.bench``, ``lp.diagrams``, …): each imports more than the
#: kernels need. ``explain`` and ``gradcheck`` are the functions; their modules are
#: ``loopprop.explain`` and ``loopprop.gradcheck`` in ``sys.modules``.
_LAZY_MODULES = ("bench", "cli", "diagrams", "generate", "kernels", "layers", "models",
                 "network", "plan", "plots", "text", "train")


def __dir__() -> list[str]:
    """The module's names, with the lazily imported modules (``dir(lp)``, tab completion)."""
    return sorted(set(globals()) | set(_LAZY_MODULES))


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'loopprop' has no attribute {name!r}")

__all__ = [
    "ModelFileError",
    "datasets",
    "vectorized",
    "Network",
    "activation_backward",
    "activation_forward",
    "attention_backward",
    "attention_forward",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "conv2d_backward",
    "conv2d_forward",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "embedding_backward",
    "embedding_forward",
    "explain",
    "gradcheck",
    "gru_backward",
    "gru_forward",
    "layernorm_backward",
    "layernorm_forward",
    "lstm_backward",
    "lstm_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "mse_loss",
    "neuron_step",
    "rnn_backward",
    "rnn_forward",
    "sgd_update",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]
