"""loopprop: backpropagation as explicit loops over neurons and batch items, compiled with Numba.

Every gradient formula of the guide (``docs``: the backprop guide, §4–§12) is a loop you can read,
``dW[i, j] += dZ[i, k] * A_prev[j, k]``, running at compiled speed. Arrays follow the guide:
examples are columns, ``W (n_out, n_in)``, ``b (n_out,)``, ``A (n, m)``.
"""

from .kernels.activations import activation_backward, activation_forward
from .kernels.dense import dense_backward, dense_forward
from .kernels.losses import mse_loss, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .kernels.neuron import neuron_step
from .kernels.optim import sgd_update
from .explain import explain  # the function; the module is loopprop.explain in sys.modules
from .gradcheck import gradcheck
from .network import ModelFileError, Network

__version__ = "0.1.0"

__all__ = [
    "ModelFileError",
    "Network",
    "activation_backward",
    "activation_forward",
    "dense_backward",
    "dense_forward",
    "explain",
    "gradcheck",
    "mse_loss",
    "neuron_step",
    "sgd_update",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]
