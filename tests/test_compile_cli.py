"""``loopprop compile``: compile ahead what a model needs, naming each step."""

from __future__ import annotations

import numba
import pytest

from loopprop import ahead, cli
from loopprop.layers.registry import kind_of


def test_compile_names_every_step_of_the_mlp(capsys):
    assert cli.main(["compile", "--model", "mlp", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    steps = [line.split(": ", 1)[1].rsplit(": ", 1)[0] for line in err.splitlines()
             if line.startswith("[")]
    assert steps == ["a second process", "Dense rows", "Activation rows",
                     "the training epoch", "evaluation", "forward and backward"], err
    first = err.splitlines()[0]
    assert first.startswith("[1/6] mlp float64: a second process: ")
    assert first.endswith(": started" if not numba.config.DISABLE_JIT else
                          ": not started (compiled here)"), first
    assert "compiled mlp in " in out and "s of compiling" in out


def test_compile_steps_cover_every_kind_of_each_model():
    for model in ahead.MODELS:
        names = [what for what, _ in ahead.steps(model, "float32")]
        net = ahead.network(model, "float32")
        kinds = list(dict.fromkeys(kind_of(row).name for row in net.rows))
        assert names[0] == "a second process"
        assert names[1:1 + len(kinds)] == [f"{k} rows" for k in kinds], model
        assert "the training epoch" in names
    assert [w for w, _ in ahead.steps("gpt", "float32")][-1] == "sampling"


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="nothing compiles with the JIT off")
def test_a_compiled_model_compiles_nothing_more_when_it_trains(capsys):
    """After ``compile --model mlp`` a dense network of other sizes trains without compiling."""
    import numpy as np

    from loopprop import _compiling
    from loopprop.network import Network

    cli.main(["compile", "--model", "mlp", "--no-progress"])
    before = _compiling.seconds()
    net = Network([5, 9, 4, 2], ["tanh", "relu", "softmax"], "cross_entropy")
    X, y = np.zeros((5, 12)), np.zeros(12, dtype=np.int64)
    net.fit(X, y, epochs=1, batch_size=5, progress=False)
    net.evaluate(X, y)
    assert _compiling.seconds() == before


def test_compile_refuses_all_with_a_model(capsys):
    assert cli.main(["compile", "--all", "--model", "cnn"]) == 2
    assert "give --all or --model, not both" in capsys.readouterr().err


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError,
                       match="model: expected one of mlp, cnn, resnet, gpt, lstm, gru, rnn"):
        ahead.network("transformer", "float64")


def test_the_second_process_compiles_the_epochs_real_models_use():
    """The helper's "epochs" job trains a network of cheap rows; the epochs it compiles must be
    the ones a real model calls (the same signature), or the helper works for nothing."""
    import numpy as np

    from loopprop import _helper, models, train
    from loopprop.network import Network

    for text in (False, True):
        _helper.run(_helper.epochs_job("float32", text))  # runs (JIT on or off) without error
    if numba.config.DISABLE_JIT:
        return
    epoch, text_epoch = set(train._train_epoch.signatures), set(train._train_text_epoch.signatures)
    rng = np.random.default_rng(0)
    mlp = Network([4, 3, 2], ["relu", "softmax"], "cross_entropy", dtype="float32")
    mlp.fit(rng.standard_normal((4, 8)), np.arange(8) % 2, epochs=1, batch_size=4,
            progress=False)
    gpt = models.gpt(5, 4, 1, 1, 4, dtype="float32")
    gpt.fit_text(rng.integers(0, 5, 64), epochs=1, steps_per_epoch=1, batch_size=2,
                 progress=False)
    assert set(train._train_epoch.signatures) == epoch
    assert set(train._train_text_epoch.signatures) == text_epoch
