"""Training a GPT on text and sampling from it: the tokenizer, fit_text against a Python loop,
the key/value cache against recomputing the window, save/load, the CLI and its errors."""

import numpy as np
import pytest
from helpers import assert_close, one_line_error, run_cli

from loopprop import ModelFileError, Network, generate, models, text
from loopprop.kernels.rng import _below

CORPUS = "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n\n" for i in range(200))


def test_tokenizer_round_trip_and_errors():
    tok = text.CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw" and tok.vocab_size == 8
    ids = tok.encode("hello")
    assert ids.tolist() == [3, 2, 4, 4, 5] and ids.dtype == np.int64
    assert tok.decode(ids) == "hello"
    assert text.CharTokenizer.from_config(tok.to_config()).chars == tok.chars
    with pytest.raises(ValueError, match=r"3 character\(s\) are not in the vocab.*'a', 'y', 'z'"):
        tok.encode("hazy")
    with pytest.raises(ValueError, match="non-empty"):
        text.CharTokenizer.from_text("")


def test_read_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="the file is empty"):
        text.read_text(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text.*iconv"):
        text.read_text(latin)
    with pytest.raises(FileNotFoundError):
        text.read_text(tmp_path / "missing.txt")


def test_stdlib_corpus_is_python_source():
    files = text.stdlib_files()
    assert len(files) > 100 and all(f.endswith(".py") for f in files)
    assert not any("/test/" in f or "site-packages" in f for f in files)
    head = text.stdlib_corpus(max_chars=50_000)
    assert len(head) == 50_000 and "def " in head and "import" in head


def test_unigram_entropy_against_a_direct_sum():
    ids = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([2, 1, 3]) / 6
    assert abs(text.unigram_entropy(ids, 4) + (p * np.log(p)).sum()) < 1e-15


def small_gpt(dtype="float64", seed=0, vocab=None, block=8):
    tok = text.CharTokenizer.from_text(CORPUS)
    return models.gpt(vocab or tok.vocab_size, block, 2, 2, 16, dtype=dtype, seed=seed), tok


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_fit_text_equals_the_python_loop():
    """Same windows (loopprop's generator, drawn here in Python), same SGD steps: the same
    weights, bitwise."""
    net, tok = small_gpt()
    twin, _ = small_gpt()
    ids = tok.encode(CORPUS)
    T, bs, steps, lr = 8, 3, 4, 0.05
    net.fit_text(ids, epochs=2, steps_per_epoch=steps, batch_size=bs, lr=lr, optimizer="sgd",
                 weight_decay=0.0, clip_grad_norm=None, lr_schedule="constant", seed=7,
                 progress=False)
    seeds = np.random.default_rng([7, 2])
    for _ in range(2):
        state = np.array([int(seeds.integers(0, 2**62))], np.uint64)
        for _ in range(steps):
            starts = [_below(state, len(ids) - T) for _ in range(bs)]
            X = np.stack([ids[s:s + T] for s in starts], axis=1)
            Y = np.stack([ids[s + 1:s + T + 1] for s in starts], axis=1)
            twin.zero_grad()
            twin.forward(X)
            twin.backward(Y)
            twin.step(lr)
    assert np.array_equal(net.flat_params, twin.flat_params)


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_training_beats_the_unigram_entropy():
    """A fixed corpus: after training, the held-out loss is far below the entropy of the
    characters' frequencies (the best a model without context can do)."""
    tok = text.CharTokenizer.from_text(CORPUS)
    train, val = text.split(tok.encode(CORPUS), 0.1)
    net = models.gpt(tok.vocab_size, 16, 2, 2, 32, dtype="float32", seed=0)
    hist = net.fit_text(train, epochs=3, steps_per_epoch=60, batch_size=16, lr=3e-3,
                        validation=val, progress=False)
    h = text.unigram_entropy(train, tok.vocab_size)
    assert hist["val_loss"][-1] < 0.6 * h, (hist["val_loss"], h)
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert len(hist["tokens_per_s"]) == 3 and min(hist["tokens_per_s"]) > 0


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_cached_sampling_equals_recomputing_the_window():
    net, tok = small_gpt(seed=2)
    ids = tok.encode(CORPUS)
    net.fit_text(ids, epochs=1, steps_per_epoch=20, batch_size=8, progress=False)
    prompt = tok.encode("def f1")
    # the same next-token distributions, position by position (float64)
    stepper = generate._Stepper(net)
    X = np.zeros((8, 1), np.int64)
    X[:6, 0] = prompt
    full = net.predict(X)[:, :, 0]
    for pos, t in enumerate(prompt):
        assert_close(f"probabilities at {pos}", stepper.step(int(t), pos), full[:, pos], 1e-12)
    # and the same tokens, past the block (the context restarts from its last half)
    a = generate.sample(net, prompt, 40, temperature=0.9, seed=3)
    b = generate.sample(net, prompt, 40, temperature=0.9, seed=3, use_cache=False)
    assert a.tolist() == b.tolist()
    assert generate.sample(net, prompt, 40, temperature=0.9, seed=3).tolist() == a.tolist()
    assert generate.sample(net, prompt, 40, temperature=0.9, seed=4).tolist() != a.tolist()


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_save_load_keeps_the_tokenizer_and_the_samples(tmp_path):
    net, tok = small_gpt(dtype="float32")
    net.metadata["tokenizer"] = tok.to_config()
    net.fit_text(tok.encode(CORPUS), epochs=1, steps_per_epoch=5, batch_size=4, progress=False)
    net.save(tmp_path / "g.npz")
    back = Network.load(tmp_path / "g.npz")
    assert back.metadata["tokenizer"] == tok.to_config()
    prompt = tok.encode("return")
    assert np.array_equal(generate.sample(net, prompt, 20, seed=1),
                          generate.sample(back, prompt, 20, seed=1))


def test_fit_text_and_sample_errors():
    net, tok = small_gpt()
    with pytest.raises(ValueError, match="too few for windows of 8 tokens"):
        net.fit_text(np.arange(5), progress=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        net.fit_text(np.full(100, 999), progress=False)
    with pytest.raises(ValueError, match="1-D array of token ids"):
        net.fit_text(np.zeros((10, 10), np.int64), progress=False)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        generate.sample(net, [], 5)
    with pytest.raises(ValueError, match="temperature"):
        generate.sample(net, [1], 5, temperature=-0.5)
    mlp = Network([4, 3], ["softmax"], "cross_entropy")
    with pytest.raises(TypeError, match="needs a language model"):
        mlp.fit_text(np.arange(10))


@pytest.mark.heavy  # trains: minutes with the JIT off
def test_cli_trains_a_gpt_and_samples(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text(CORPUS)
    model = tmp_path / "g.npz"
    r = run_cli("train", "--model", "gpt", "--text", str(corpus), "--epochs", "2",
                "--steps-per-epoch", "10", "--n-layer", "1", "--n-embd", "16", "--block-size",
                "16", "--save", str(model), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "validation loss" in r.stdout and "unigram entropy" in r.stdout
    r = run_cli("sample", str(model), "--prompt", "def ", "--tokens", "50", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def ") and len(r.stdout.rstrip("\n")) >= 50
    again = run_cli("sample", str(model), "--prompt", "def ", "--tokens", "50", "--seed", "0")
    assert again.stdout == r.stdout
    one_line_error(run_cli("sample", str(model), "--prompt", "é"),
                   "not in the vocabulary")
    one_line_error(run_cli("sample", str(model), "--temperature", "-1"), "--temperature")
    r = run_cli("sample", str(model), "--prompt", "def ", "--tokens", "20", "--temperature",
                "1e-320")
    assert r.returncode == 0, r.stderr
    greedy = run_cli("sample", str(model), "--prompt", "def ", "--tokens", "20",
                     "--temperature", "0", "--seed", "5")
    assert greedy.stdout == r.stdout  # greedy: the same characters whatever the seed


@pytest.mark.parametrize("temperature", [0.0, 1e-7, 1e-300, 1e-310, 5e-324])
def test_a_tiny_temperature_decodes_greedily(temperature):
    """Below GREEDY_TEMPERATURE each token is the argmax of the model's next-token
    distribution (the oracle: the whole window through net.predict); a subnormal τ once
    made the CDF NaN and returned the last token of the vocabulary."""
    net, tok = small_gpt(seed=3)
    ctx = list(tok.encode("def f"))
    want = []
    for _ in range(3):  # stays inside the block of 8: no context restart
        X = np.zeros((8, 1), np.int64)
        X[:len(ctx), 0] = ctx
        want.append(int(np.argmax(net.predict(X)[:, len(ctx) - 1, 0])))
        ctx.append(want[-1])
    got = generate.sample(net, tok.encode("def f"), 3, temperature=temperature, seed=1)
    assert got.tolist() == want
    probs = np.full(5, 0.1)
    probs[2] = 0.6
    assert generate._draw(probs, temperature, np.random.default_rng(0)) == 2


def test_cli_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    one_line_error(run_cli("train", "--model", "gpt", "--text", str(empty)), "the file is empty")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    one_line_error(run_cli("train", "--model", "gpt", "--text", str(latin)), "not UTF-8")
    short = tmp_path / "short.txt"
    short.write_text("abc" * 20)
    one_line_error(run_cli("train", "--model", "gpt", "--text", str(short)), "too few")
    one_line_error(run_cli("train", "--model", "gpt", "--n-head", "3"), "not divisible")
    mlp = tmp_path / "mlp.npz"
    Network([4, 3], ["softmax"], "cross_entropy").save(mlp)
    one_line_error(run_cli("sample", str(mlp)), "no character tokenizer")


@pytest.mark.parametrize("chars", ["abc", "abcdefghijklmnop", "aab"])
def test_a_tokenizer_that_does_not_fit_the_model_is_refused_on_load(tmp_path, chars):
    """A crafted file's tokenizer with fewer characters than the model's vocabulary once failed
    at sampling with an ids error, one with more sampled as if nothing were wrong."""
    net, tok = small_gpt()
    net.metadata["tokenizer"] = {"kind": "char", "chars": chars}
    net.save(tmp_path / "g.npz")
    with pytest.raises(ModelFileError, match="tokenizer"):
        Network.load(tmp_path / "g.npz")
    net.metadata["tokenizer"] = tok.to_config()
    net.save(tmp_path / "g.npz")
    assert Network.load(tmp_path / "g.npz").metadata["tokenizer"] == tok.to_config()


def _interrupt_after(seconds: float):
    """Send this process SIGINT (Ctrl-C) from another thread after ``seconds``."""
    import os
    import signal
    import threading

    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.heavy  # trains: slow with the JIT off
def test_ctrl_c_stops_a_long_epoch_between_two_steps():
    """An epoch of ten million steps (hours): Ctrl-C once waited for its end. It now stops
    after the step in progress, with the parameters of the last complete step."""
    net, tok = small_gpt()
    ids = tok.encode(CORPUS)
    net.fit_text(ids, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)  # compiled
    before = net.flat_params.copy()
    _interrupt_after(2.0)
    with pytest.raises(KeyboardInterrupt):
        net.fit_text(ids, epochs=1, steps_per_epoch=10**7, batch_size=4, progress=False)
    assert net.interrupted["epoch"] == 1 and 0 < net.interrupted["steps"] < 10**7
    assert np.isfinite(net.flat_params).all() and not np.array_equal(net.flat_params, before)


@pytest.mark.heavy  # trains: slow with the JIT off
def test_cli_ctrl_c_saves_the_last_complete_state(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "corpus.py"
    corpus.write_text(CORPUS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopprop.cli", "train", "--model", "gpt", "--text", str(corpus),
         "--epochs", "1", "--steps-per-epoch", "10000000", "--n-layer", "1", "--n-embd", "16",
         "--block-size", "16", "--save", "g.npz", "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the header's last line: training starts
        if "steps" in line and "epoch" in line:
            break
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "the last complete state is saved to g.npz" in err
    net = Network.load(tmp_path / "g.npz")
    assert net.metadata["tokenizer"]["kind"] == "char" and np.isfinite(net.flat_params).all()
