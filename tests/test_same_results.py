"""Same results as before the epoch was compiled once: losses, validation losses and the
parameters' sums of a few epochs of five networks with fixed seeds, bit for bit (``float.hex``),
recorded at commit d8d49f8 (the dispatch compiled per set of kinds), on one thread and on two
(the GPT's since re-recorded: see its entry).

The kernels are the same, and so is the order of every sum: the new dispatch changes how a row
function is reached (through a table of compiled functions), not what it computes.
"""

from __future__ import annotations

import numpy as np
import pytest

import loopprop as lp
from loopprop import models
from loopprop.layers import Dense, Dropout, ReLU, Softmax

pytestmark = pytest.mark.heavy  # the JIT-off pass computes in another order (no fastmath)

#: recorded at d8d49f8 (AMD EPYC Zen 4; identical on one and two threads)
RECORDED = {
    'mlp': [
        '0x1.64394a24d4b9fp+1', '0x1.83be9dd4b4e4bp+0', '0x1.9f53f3b253931p-1',
        '0x1.51a250ac7f6ffp+3',
    ],
    'mlp_dropout32': [
        '0x1.b5630bf947095p+1', '0x1.142f1d4bfd82cp+1', '0x1.98e5ca9a53d6dp+0',
        '0x1.3fa5dc0000000p+3',
    ],
    'cnn': [
        '0x1.53826a4e6b7acp+2', '0x1.7f7972d544385p+1', '0x1.3e7e1ae37b0edp+1',
        '0x1.0741a20e98160p+1', '-0x1.669d7ca350595p+6',
    ],
    # re-recorded in issue 28 when layer norm's backward moved from registers of columns to
    # blocks of rows (each column's sums in another rounding of the same formula: the losses
    # agree to 1e-10; the other networks have no layer norm and kept their bits)
    'gpt': [
        '0x1.33bd8b12da2d3p+1', '0x1.31ffdd5d06c31p+1', '0x1.3576b2490a55ep+1',
        '0x1.344fb826fa496p+1', '0x1.48b329f2ddc37p+6',
    ],
    'gpt_sample': [
        5, 10, 1, 10, 3, 4, 8, 4,
    ],
}

#: the resnet's batch norm row runs one of two machine codes, with their own last bits: compiled
#: in this process, or loaded from Numba's cache (the cached row vectorizes the reassociated sums
#: of its linked batch norm kernel differently; both orders are valid). Both were recorded at
#: d8d49f8 (an empty cache, then a warm one); a run must give one of them.
RESNET = (
    ['0x1.cbc9bb3d90433p+2', '0x1.81521e20a1cbbp+1', '0x1.5ebdf3a4c31f5p+2',
     '0x1.07ac5dd0ff18dp+2', '0x1.438a618b7eb5ap+6'],
    ['0x1.cbc9bb3d90433p+2', '0x1.81521e20a1cbcp+1', '0x1.5ebdf3a464811p+2',
     '0x1.07ac5dd09bd78p+2', '0x1.438a618b323e9p+6'],
)


def data(image: bool):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((1, 8, 8, 96)) if image else rng.standard_normal((64, 96))
    return X, rng.integers(0, 10, 96)


def hexes(values) -> list[str]:
    return [float(v).hex() for v in values]


def run(name: str, parallel: bool):
    X, y = data(name in ("cnn", "resnet"))
    if name == "mlp":
        net = lp.Network([64, 32, 10], ["tanh", "softmax"], "cross_entropy", seed=3)
        h = net.fit(X, y, epochs=3, batch_size=16, lr=0.1, optimizer="momentum", seed=5,
                    progress=False, parallel=parallel)
        return hexes(h["loss"] + [net.flat_params.sum()])
    if name == "mlp_dropout32":
        net = lp.Network([Dense(32), ReLU(), Dropout(0.2), Dense(10), Softmax()],
                         loss="cross_entropy", input_shape=(64,), dtype="float32", seed=3)
        h = net.fit(X, y, epochs=3, batch_size=16, lr=0.01, optimizer="adam", seed=5,
                    progress=False, parallel=parallel)
        return hexes(h["loss"] + [net.flat_params.sum()])
    if name in ("cnn", "resnet"):
        layers = models.cnn_layers("digits") if name == "cnn" else models.resnet_layers("digits")
        net = lp.Network(layers, loss="cross_entropy", input_shape=(1, 8, 8), seed=3)
        h = net.fit(X, y, epochs=2, batch_size=32, lr=0.01, optimizer="adamw", seed=5,
                    progress=False, parallel=parallel, validation=(X[..., :40], y[:40]))
        return hexes(h["loss"] + h["val_loss"] + [net.flat_params.sum()])
    ids = np.random.default_rng(9).integers(0, 11, 500)
    net = models.gpt(11, 16, 2, 2, 16, seed=3)
    h = net.fit_text(ids, epochs=2, steps_per_epoch=5, batch_size=4, lr=3e-3, seed=5,
                     progress=False, parallel=parallel, validation=ids[:100])
    got = hexes(h["loss"] + h["val_loss"] + [net.flat_params.astype(np.float64).sum()])
    if name == "gpt_sample":
        return [int(v) for v in lp.generate.sample(net, ids[:5], 8, seed=1)]
    return got


@pytest.mark.parametrize("parallel", [False, True], ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("name", sorted(RECORDED) + ["resnet"])
def test_the_same_results_bit_for_bit(name, parallel):
    if name == "resnet":
        assert run(name, parallel) in RESNET
    else:
        assert run(name, parallel) == RECORDED[name]
