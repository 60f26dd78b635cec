"""Study tools: Mermaid diagrams that really render, and chain-rule explanations whose numbers
agree with backward and with finite differences."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

import loopprop as lp
from loopprop.diagrams import KINDS
from loopprop.explain import explain_neuron, explain_weight
from loopprop.layers import (AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, LayerNorm,
                             LeakyReLU, MaxPool2d, ReLU, Residual, Sigmoid, Softmax, Tanh)

ROOT = pathlib.Path(__file__).resolve().parents[1]
NETS = [
    lp.Network([2, 3, 1], ["sigmoid", "sigmoid"], "binary_cross_entropy"),
    lp.Network([64, 32, 16, 10], ["relu", "tanh", "softmax"], "cross_entropy"),
    lp.Network([5, 1], ["identity"], "mse"),
]
# networks built from layer objects: drawn one node per layer, with each kind's formulas
LAYER_NETS = [
    lp.Network([Conv2d(4, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(6, 3, stride=2),
                AvgPool2d(2), Flatten(), Dropout(0.25), Dense(10), Softmax()],
               loss="cross_entropy", input_shape=(3, 12, 12)),
    lp.Network([Dense(4), Tanh(), Dense(2), Sigmoid()], loss="binary_cross_entropy",
               input_shape=(3,)),
    lp.Network([Flatten(), Dense(3), LeakyReLU(0.1), Dense(1)], loss="mse",
               input_shape=(2, 2, 2)),
    lp.Network([Conv2d(3, 3, padding=1), BatchNorm(), ReLU(),
                Residual([Conv2d(3, 3, padding=1), BatchNorm()]), Flatten(),
                Residual([LayerNorm(), Dense(27), Tanh()]), Dense(2), Softmax()],
               loss="cross_entropy", input_shape=(1, 3, 3)),
    lp.models.gpt(11, 8, 2, 2, 8),  # embeddings, attention, residual blocks, tied output
    lp.models.char_rnn(11, 4, 2, cell="lstm", block_size=6),  # recurrent layers
]


def mermaid_js() -> pathlib.Path | None:
    candidates = [os.environ.get("LOOPPROP_MERMAID_JS", ""),
                  ROOT / ".ci" / "node" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"]
    for c in candidates:
        if c and pathlib.Path(c).is_file():
            return pathlib.Path(c)
    return None


def render_in_chromium(diagrams: dict[str, str]) -> dict:
    """Render every diagram with Mermaid's own renderer in headless Chromium; return
    ``{name: "ok" | error message}``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    js = mermaid_js()
    if chromium is None or js is None:
        pytest.skip("needs Debian's chromium and mermaid from npm (.ci/run installs both)")
    page = """<!doctype html><html><body><pre id="result">pending</pre>
<script src="%s"></script>
<script>
const diagrams = %s;
mermaid.initialize({startOnLoad: false, securityLevel: "strict"});
(async () => {
  const out = {};
  let n = 0;
  for (const [name, text] of Object.entries(diagrams)) {
    try {
      await mermaid.parse(text);
      const {svg} = await mermaid.render("d" + (n++), text);
      out[name] = svg.includes("<svg") ? "ok" : "no svg";
    } catch (e) { out[name] = String(e && e.message || e); }
  }
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script></body></html>""" % (js.as_uri(), json.dumps(diagrams))
    with tempfile.TemporaryDirectory() as tmp:
        html = pathlib.Path(tmp) / "page.html"
        html.write_text(page, encoding="utf-8")
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp}/profile", "--allow-file-access-from-files",
             "--virtual-time-budget=30000", "--dump-dom", html.as_uri()],
            capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    start = dom.find('<pre id="result">') + len('<pre id="result">')
    text = dom[start:dom.find("</pre>", start)]
    import html as htmlmod

    text = htmlmod.unescape(text)
    assert text != "pending", f"mermaid did not finish: {proc.stderr[-2000:]}"
    return json.loads(text)


def test_every_diagram_kind_renders_with_mermaid():
    diagrams = {f"{kind}-{n}": net.to_mermaid(kind) for n, net in enumerate(NETS + LAYER_NETS)
                for kind in KINDS}
    # the oracle can fail: a broken diagram must be reported as an error
    diagrams["broken"] = "flowchart LR\n    a[unclosed --> b"
    recurrent = [(cell, T) for cell in ("lstm", "gru", "rnn") for T in (3, 6)]
    for cell, T in recurrent:  # shorter and longer than the four steps drawn
        net = lp.models.char_rnn(11, 4, 2, cell=cell, block_size=T)
        diagrams[f"unrolled-{cell}-{T}"] = net.to_mermaid("unrolled")
    results = render_in_chromium(diagrams)
    assert results.pop("broken") != "ok"
    bad = {k: v for k, v in results.items() if v != "ok"}
    assert not bad, f"diagrams that Mermaid refused: {bad}"
    assert len(results) == len(NETS + LAYER_NETS) * len(KINDS) + len(recurrent)


def test_network_diagram_shows_real_sizes_and_activations():
    text = NETS[1].to_mermaid("network")
    for piece in ("64 features", "32 × relu", "16 × tanh", "10 × softmax", "dW1 32×64",
                  "P − Y"):
        assert piece in text


def test_cnn_diagrams_show_each_layer_and_its_index_level_gradients():
    net = LAYER_NETS[0]
    text = net.to_mermaid("network")
    for piece in ("Input X: 3×12×12", "A1 = Conv2d(", ": 4×12×12", "A3 = MaxPool2d(", ": 4×6×6",
                  ": 6×2×2", "A6 = Flatten(): 6", "A8 = Dense(n_out=10): 10",
                  # the fused seed goes into the softmax's input, not through softmax′
                  "dA8 = (softmax(A8) − Y)/m",
                  # stride 2, no padding; padding 1 shows as − 1
                  "A3[c, 2y + p, 2x + q, k]", "X[c, y + p − 1, x + q − 1, k]",
                  "dA2[winner] += dA3[c, y, x, k]", "/ 4 in every window", "dA6 += dA7 ⊙ mask7",
                  "dW8 = dA8·A7ᵀ"):
        assert piece in text, piece
    assert "softmax′" not in text  # fused: never run
    assert "dX" not in text  # the data's gradient is not computed
    workflow = net.to_mermaid("workflow")
    assert workflow.count("--> update") == 1
    for piece in ("dW1[i, c, p, q]", "db4[i]", "dA7 += W8ᵀ·dA8"):
        assert piece in workflow, piece
    assert "dX" not in workflow
    cache = net.to_mermaid("cache")
    for piece in ("the winner of each window (an integer)", "mask7", "X (read by dW1)"):
        assert piece in cache, piece
    assert "Input x: a 3×3 window of 3 channels" in net.to_mermaid("neuron")
    mse = LAYER_NETS[2].to_mermaid("network")
    assert "dA4 = (A4 − Y)/m" in mse and "leaky_relu′(A2)" in mse


def test_residual_and_normalization_diagrams():
    text = LAYER_NETS[3].to_mermaid("network")
    for piece in ("A2 = BatchNorm(", "A6 = A5 + A3 (the block's input)",
                  "dA3 += dA6 (skip path)", "dA5 += dA6 (branch)",
                  "every example of the batch couples", "A8 = LayerNorm(", "ĝ = γ·dA8",
                  "A11 = A10 + A7", "dA7 += dA11 (skip path)"):
        assert piece in text, piece
    assert "μ and r = 1/σ per channel" in LAYER_NETS[3].to_mermaid("cache")


def test_gpt_diagrams_draw_attention_as_three_paths_and_the_skips_as_edges():
    net = LAYER_NETS[4]
    text = net.to_mermaid("network")
    for piece in (  # forward: Q, K, V from the block's normalized input, P from Q and K
            'a4q["Q = W_q4·A3', "a3 --> a4q", "a3 --> a4k", "a3 --> a4v", "a4q --> a4p",
            "a4k --> a4p", "a4p --> a4o", "a4v --> a4o", "a4o --> a4",
            # the skip paths: the block's input into the sum, the sum's gradient back into it
            'a2 -.->|"skip path"| a5', 'a5 -.->|"skip path"| a10',
            'g5 -.->|"skip path"| g2',
            # backward: dO splits into dV and dS; dS into dQ and dK; all three reach dA3
            "g4 --> g4o", "g4o --> g4v", "g4o --> g4s", "g4s --> g4q", "g4s --> g4k",
            "dA3 += W_qkv4ᵀ·[dQ; dK; dV]", "g4k --> g3", "g4v --> g3"):
        assert piece in text, piece


def test_cache_diagram_gives_each_caches_memory_for_a_batch():
    net = LAYER_NETS[4]  # float32: T = 8, C = 8, 2 heads
    text = net.to_mermaid("cache", batch_size=16)
    # attention: 6·C·T + n_head·T² = 384 + 128 values per example, 4 bytes, 16 examples
    assert "A3ᵀ, Q, K, V, P, O — 512 values per example, 32.0 KiB for a batch of 16" in text
    assert "output 64 values per example, 4.0 KiB for a batch of 16" in text
    cnn = LAYER_NETS[0].to_mermaid("cache", batch_size=10)
    # max pooling's winners: 4·6·6 int32 per example
    assert "the winner of each window (an integer) — 144 values per example, 5.6 KiB" in cnn
    assert "for a batch" not in net.to_mermaid("cache")
    dense = NETS[1].to_mermaid("cache", batch_size=32)
    assert "X cached, 64 × m: 16.0 KiB for m = 32" in dense
    with pytest.raises(ValueError, match="batch_size"):
        net.to_mermaid("cache", batch_size=0)


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError, match="workflow, neuron, network, cache"):
        NETS[0].to_mermaid("sankey")


def test_explain_default_prints_the_guide_numbers():
    text = explain_neuron()
    for piece in ("z = Σ_j w_j·x_j + b = 0.5·2 + 1 = 2", "a = σ(2) = 0.8808", "0.0071",
                  "dL/da = a − y = -0.1192", "= 0.1050", "dL/dz = dL/da · da/dz", "= -0.0125",
                  "dL/dw = dL/dz · x = (-0.0125)·2 = -0.0250", "dL/db = dL/dz · 1 = -0.0125"):
        assert piece in text, piece
    assert lp.explain() == text


@pytest.mark.parametrize("sizes,layer,i,j", [([2, 3, 1], 1, 2, 1), ([2, 3, 1], 2, 0, 2),
                                             ([3, 4, 3, 2], 1, 3, 0), ([3, 4, 3, 2], 2, 1, 3),
                                             ([1, 1], 1, 0, 0)])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_weight_explanation_sum_equals_backward_and_finite_differences(sizes, layer, i, j,
                                                                       activation):
    ex = explain_weight(sizes, layer=layer, i=i, j=j, batch=3, seed=2, activation=activation)
    assert len(ex.terms) == 3
    assert abs(ex.total - sum(ex.terms)) == 0
    assert abs(ex.total - ex.backward) <= 1e-8
    assert abs(ex.total - ex.finite_difference) <= 1e-8
    text = str(ex)
    assert f"dL/dW^({layer})[{i}, {j}] = Σ_k dZ^({layer})[{i}, k] · A^({layer - 1})[{j}, k]" in text
    assert "Network.backward" in text and "finite differences" in text


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(layer=3), "layer: expected 1…2"), (dict(i=5), "i: layer 1 has 3 neurons"),
    (dict(j=-1), "j: layer 0 has 2 neurons"),
])
def test_explain_weight_checks_indices(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        explain_weight([2, 3, 1], **kwargs)


def test_cli_explain_and_diagram():
    from loopprop import cli

    assert cli.main(["explain"]) == 0
    assert cli.main(["explain", "--network", "2-3-1", "--layer", "2", "--j", "1"]) == 0
    assert cli.main(["explain", "--x", "1,2", "--w", "0.5,-1", "--activation", "tanh"]) == 0
    assert cli.main(["explain", "--x", "a,b"]) == 2
    for kind in KINDS:
        assert cli.main(["diagram", kind, "--network", "4-3-2"]) == 0


def test_cli_diagram_draws_any_model_and_saved_files(capsys, tmp_path):
    from loopprop import cli

    assert cli.main(["diagram", "network", "--model", "gpt"]) == 0
    assert "a4q --> a4p" in capsys.readouterr().out
    assert cli.main(["diagram", "cache", "--model", "resnet", "--batch-size", "32"]) == 0
    assert "for a batch of 32" in capsys.readouterr().out
    assert cli.main(["diagram", "network", "--model", "cnn"]) == 0
    assert "MaxPool2d" in capsys.readouterr().out
    LAYER_NETS[3].save(tmp_path / "res.npz")
    assert cli.main(["diagram", "network", "--file", str(tmp_path / "res.npz")]) == 0
    assert "skip path" in capsys.readouterr().out
    assert cli.main(["diagram", "--file", str(tmp_path / "none.npz")]) == 2
    assert "no such model file" in capsys.readouterr().err


@pytest.mark.heavy
def test_vanishing_gradient_example_shows_a_tenfold_gap():
    """Issue 6: the sigmoid network's first-layer gradient ≥ 10× smaller than ReLU's."""
    pytest.importorskip("sklearn")
    import importlib.util

    spec = importlib.util.spec_from_file_location("vg", ROOT / "examples" /
                                                  "vanishing_gradients.py")
    vg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vg)
    assert vg.first_layer_ratio(epochs=3) >= 10
