"""Every example runs, and the worked example prints exactly the output in its docstring."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def docstring_output(path: pathlib.Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    block = doc.split("Output::", 1)[1]
    lines = [line[4:] if line.startswith("    ") else line for line in block.splitlines()]
    return "\n".join(lines).strip()


def test_worked_example_prints_its_docstring():
    path = ROOT / "examples" / "worked_example.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.strip() == docstring_output(path)
    # the guide's numbers (§11) appear as printed in the guide
    for number in ("= 2", "0.8808", "-0.1192", "0.105", "-0.0125", "-0.025"):
        assert number in out


def test_batchnorm_by_hand_prints_its_docstring():
    path = ROOT / "examples" / "batchnorm_by_hand.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.strip() == docstring_output(path)
    # the three paths sum to the compact formula, and the kernels agree
    assert "agree to 1e-12: True" in out
    assert "dx = [0.042263, -0.158379, 0.154110, -0.037994]" in out


def _load(name: str):
    """An example as a module (its ``main`` returns what it printed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_maxpool_gradient_example_scatters_to_the_winners():
    import numpy as np

    out = _load("maxpool_gradient").main()
    image, upstream, grad = out["image"][0, :, :, 0], out["upstream"][0, :, :, 0], out["grad"]
    expect = np.zeros((6, 6))
    for y in range(3):  # each window's first maximum in row-major order gets its gradient
        for x in range(3):
            window = image[2 * y:2 * y + 2, 2 * x:2 * x + 2]
            p, q = np.unravel_index(np.argmax(window), (2, 2))
            expect[2 * y + p, 2 * x + q] = upstream[y, x]
    assert np.array_equal(grad[0, :, :, 0], expect)
    assert np.sum(grad == 0) == 27  # three of every four
    assert np.allclose(out["numeric"], grad, atol=1e-8)


def test_attention_probabilities_example():
    import numpy as np

    out = _load("attention_probabilities").main()
    P, dS = out["P"], out["dS"]
    assert np.allclose(P.sum(axis=1), 1.0) and not np.triu(P, 1).any()
    assert np.allclose(dS.sum(axis=1), 0.0, atol=1e-14) and not np.triu(dS, 1).any()
    assert np.allclose(out["dQ_hand"], out["dQ"][0, :, :, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.heavy  # trains two deep networks: minutes with the JIT off
def test_batchnorm_lets_the_deep_sigmoid_network_train():
    pytest.importorskip("sklearn")
    out = _load("batchnorm_deep_sigmoid").main(epochs=15)
    first, last, acc = out["sigmoid"]
    assert last / first > 100 and acc < 0.3  # vanishes, does not learn
    first, last, acc = out["sigmoid + batch norm"]
    assert last / first < 10 and acc > 0.85


def _quoted_lines(prefixes: tuple[str, ...]) -> list[str]:
    """The lines of the README's unlabelled code blocks that start with one of ``prefixes``:
    outputs the README quotes."""
    quoted, inside, language = [], False, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            inside, language = not inside, line[3:].strip()
        elif inside and not language and line.startswith(prefixes):
            quoted.append(line)
    return quoted


@pytest.mark.heavy  # trains four deep networks: minutes with the JIT off
def test_the_readmes_quoted_example_outputs_are_what_the_examples_print(tmp_path):
    """The README once quoted 94.2 % and a ratio of 1421.2 while the example printed 93.3 %
    and 1416.5: the doc tests ran its code blocks, not the outputs quoted beside them."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    printed = subprocess.run([sys.executable, str(ROOT / "examples" / "vanishing_gradients.py"),
                              str(tmp_path / "v.png")], capture_output=True, text=True,
                             check=True, timeout=1200).stdout.splitlines()
    printed += subprocess.run([sys.executable,
                               str(ROOT / "examples" / "batchnorm_deep_sigmoid.py")],
                              capture_output=True, text=True, check=True,
                              timeout=1200).stdout.splitlines()
    quoted = _quoted_lines(("sigmoid ", "relu "))
    assert len(quoted) == 4, quoted
    for line in quoted:
        assert line in printed, f"the README quotes\n  {line}\nbut the examples print\n  " \
            + "\n  ".join(printed)


@pytest.mark.heavy  # trains two recurrent models: minutes with the JIT off
def test_gradient_through_time_example_shows_the_lstm_reaching_further_back(tmp_path):
    """After the same training on the same text, the plain RNN's gradient through time shrinks
    by a larger factor per step back than the LSTM's, and the plot is written."""
    pytest.importorskip("matplotlib")
    from loopprop.through_time import decay_per_step

    curves = _load("gradient_through_time").main(steps=60, path=str(tmp_path / "g.png"))
    rnn, lstm = decay_per_step(curves["rnn"]), decay_per_step(curves["lstm"])
    assert rnn < lstm < 1.0, (rnn, lstm)
    assert curves["lstm"][0] > 100 * curves["rnn"][0]  # 47 steps back
    assert (tmp_path / "g.png").stat().st_size > 10_000
