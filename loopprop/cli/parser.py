"""``loopprop``'s argument parser: every command, option, choice and default."""

from __future__ import annotations

import argparse


from .. import models
from ._args import (LOSS_CHOICES, _Parser, _float, _index, _int_list, _network_sizes,
                    _positive_int, _seed)


def build_parser() -> argparse.ArgumentParser:
    from ..datasets import DATASETS

    from .. import __version__

    p = _Parser(prog="loopprop", description="Backpropagation as explicit loops, compiled "
                "with Numba.")
    p.add_argument("--version", action="version", version=f"loopprop {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c, r = models.MLP_DEFAULTS["classification"], models.MLP_DEFAULTS["regression"]
    t = sub.add_parser("train", help="train a network on a dataset, one compiled call per epoch",
                       description="Train a network -- an mlp (dense layers), a cnn, a "
                       "residual cnn with batch norm (resnet), a character-level gpt or a "
                       "character-level recurrent model (lstm, gru, rnn) -- and "
                       "print its test score; each epoch runs in compiled loops. The mlp's "
                       "defaults depend on the loss: cross-entropy "
                       f"{'-'.join(map(str, c['hidden']))} hidden, {c['optimizer']} lr "
                       f"{c['lr']:g}; mse {'-'.join(map(str, r['hidden']))} hidden, "
                       f"{r['optimizer']} lr {r['lr']:g}.")
    t.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="dataset of the mlp, cnn and resnet (default: digits)")
    t.add_argument("--model", default="mlp",
                   choices=["mlp", "cnn", "resnet", "gpt", "lstm", "gru", "rnn"],
                   help="mlp: dense layers (--hidden); cnn: a convolutional network on the "
                   "images of digits (adamw lr 0.004, weight decay 0.1, cosine, 100 epochs) or "
                   "mnist5k (LeNet-sized; adam lr 0.001, batch 64, 10 epochs); resnet: a "
                   "residual CNN with batch norm on the same images (adamw lr 0.005, cosine; "
                   "30 epochs on digits, 5 on mnist5k); gpt: a character-level GPT on --text "
                   "(default: the standard library's .py sources), float32, adamw lr 0.002, "
                   "β₂ 0.95, weight decay 0.1, warm-up + cosine, clipping at 1, batch 16, "
                   "5 epochs of --steps-per-epoch 200 steps; lstm, gru, rnn: a character-level "
                   "recurrent model on the same text (2 layers of --hidden 256, float32, "
                   "adamw lr 0.002, cosine, clipping at 1, batch 32 streams), trained by "
                   "truncated backpropagation through time on consecutive windows of "
                   "--block-size 64 that carry the states, 5 epochs of 200 steps, the streams "
                   "going on from epoch to epoch")
    t.add_argument("--hidden", type=_int_list, default=None,
                   help="hidden layer sizes, e.g. 128 or 128-64 (default: 512 with "
                   "cross-entropy, 64 with mse); for lstm, gru, rnn one size, the units of "
                   "every layer (default 256)")
    t.add_argument("--activation", default=None,
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
                   help="hidden activation of the mlp (default: relu)")
    t.add_argument("--loss", default=None, choices=LOSS_CHOICES,
                   help="loss (default: cross_entropy with a softmax output for classification, "
                   "mse with an identity output for regression; binary_cross_entropy: one "
                   "sigmoid output, two-class datasets only; mse on a classification set: "
                   "one-hot targets)")
    t.add_argument("--optimizer", default=None, choices=["sgd", "momentum", "adam", "adamw"],
                   help="optimizer (default: momentum, β = 0.9, for classification; sgd for "
                   "regression)")
    t.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: 40)")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="minibatch size (default: 32; 64 for the mnist5k CNN)")
    t.add_argument("--lr", type=_float, default=None,
                   help=f"learning rate (default: {c['lr']:g} for classification, {r['lr']:g} "
                   f"for regression, {models.ADAM_LR:g} with adam)")
    t.add_argument("--weight-decay", type=_float, default=None,
                   help="weight decay λ of the weights (not biases or normalization): "
                   "decoupled with adamw (default 0.01), L2 otherwise (default 0)")
    t.add_argument("--lr-schedule", default=None, choices=["constant", "step", "cosine"],
                   help="the rate per step: constant, step (×0.1 every 10 epochs) or cosine "
                   "(to 0 at the end); default constant (cosine for resnet)")
    t.add_argument("--warmup-epochs", type=_float, default=0.0,
                   help="epochs of linear warm-up of the rate (default 0)")
    t.add_argument("--clip-grad-norm", type=_float, default=None,
                   help="clip the gradient's global norm to this value before each step")
    g = t.add_argument_group("language models (with --model gpt, lstm, gru or rnn)")
    g.add_argument("--text", metavar="PATH", help="a UTF-8 text file to train on (default: the "
                   "standard library's .py sources; the last 10%% is held out)")
    g.add_argument("--block-size", type=_positive_int, default=None, help="context length T "
                   f"(default {models.GPT_SIZES['block_size']})")
    g.add_argument("--n-layer", type=_positive_int, default=None,
                   help=f"blocks (default {models.GPT_SIZES['n_layer']}) or recurrent layers "
                   f"(default {models.CHAR_RNN_SIZES['n_layer']})")
    g.add_argument("--n-head", type=_positive_int, default=None,
                   help=f"attention heads (default {models.GPT_SIZES['n_head']})")
    g.add_argument("--n-embd", type=_positive_int, default=None,
                   help=f"width (default {models.GPT_SIZES['n_embd']}) or the recurrent "
                   f"models' embedding (default {models.CHAR_RNN_SIZES['n_embd']})")
    g.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                   help="optimizer steps per epoch, each on --batch-size windows (default "
                   f"{models.GPT_SIZES['steps_per_epoch']}: random ones for gpt, the next "
                   "window of every stream for lstm, gru, rnn)")
    g.add_argument("--val-tokens", type=_positive_int, default=None,
                   help="held-out tokens scored after every epoch (default "
                   f"{models.GPT_SIZES['val_tokens']})")
    t.add_argument("--seed", type=_seed, default=0, help="seed for weights and shuffling")
    t.add_argument("--dtype", default=None, choices=["float64", "float32"],
                   help="default float64 (float32 for gpt, lstm, gru, rnn)")
    t.add_argument("--save", metavar="PATH", help="save the trained model (.npz is added if "
                   "missing)")
    t.add_argument("--plot", metavar="PNG", help="plot loss, accuracy and gradient norms "
                   "per epoch (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--resume", metavar="PATH", help="start from the weights saved at PATH by "
                   "train --save (the same --model and sizes; the optimizer starts afresh)")
    t.add_argument("--data-parallel", action="store_true",
                   help="under mpiexec -n N: every process takes a share of each batch and "
                   "the gradients are summed (MPI); rank 0 prints and saves. Needs "
                   'pip install "loopprop[dist]"')

    sm = sub.add_parser("sample", help="generate text from a language model saved by train",
                        description="Continue a prompt with a saved character-level GPT, "
                        "LSTM, GRU or RNN: a GPT's new token costs O(T) through a cache of keys "
                        "and values, a recurrent model's O(1), carrying its states.")
    sm.add_argument("model", metavar="MODEL.npz", help="a model saved by train --model gpt "
                    "(or lstm, gru, rnn) --save")
    sm.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sm.add_argument("--tokens", type=_positive_int, default=300,
                    help="characters to generate (default 300)")
    sm.add_argument("--temperature", type=_float, default=0.8,
                    help="below 1: surer, above 1: more varied; 0 (or below 1e-6): always the "
                    "most probable character (default 0.8)")
    sm.add_argument("--seed", type=_seed, default=0, help="seed of the draw (default 0)")

    ev = sub.add_parser("evaluate", help="loss and accuracy of a saved model on a dataset")
    ev.add_argument("model", metavar="MODEL.npz", help="a model saved by train --save")
    ev.add_argument("--dataset", default="digits", choices=list(DATASETS),
                    help="dataset whose held-out test split is evaluated (default: digits)")
    ev.add_argument("--split", default="test", choices=["test", "train"],
                    help="which split (default: test)")

    pr = sub.add_parser("predict", help="outputs of a saved model for inputs in a file",
                        description="Print the model's outputs A^(L) for the inputs in FILE, one "
                        "example per line (a .npy or .csv file with one example per ROW, or per "
                        "column with --columns), as raw as the dataset's own files: a model "
                        "saved by loopprop train standardizes them as in training (its file "
                        "records how). Classifiers print the class and the probabilities; a "
                        "regression model its outputs in the target's units.")
    pr.add_argument("model", metavar="MODEL.npz", help="a model saved by train --save")
    pr.add_argument("--input", required=True, metavar="FILE",
                    help="inputs: .npy or .csv (comma-separated numbers; a header line of "
                    "names is skipped)")
    pr.add_argument("--columns", action="store_true",
                    help="the file holds one example per column (loopprop's layout)")
    pr.add_argument("--output", metavar="FILE", help="also write the outputs (n_L, n) to a "
                    ".npy or .csv/.txt file (.npy is added if there is no extension)")
    pr.add_argument("--standardized", action="store_true",
                    help="the inputs are already standardized as in training (loopprop's "
                    "datasets.load); by default a model trained by loopprop train "
                    "standardizes raw inputs with the training split's mean and std, which "
                    "its file records")

    e = sub.add_parser("explain", help="the chain rule step by step, with real numbers",
                       description="Print the chain rule of one gradient with real numbers: "
                       "by default the single neuron of docs/formulas.md §11 (or any neuron: "
                       "--x, --w, --b, --y); with --network one weight of a small seeded "
                       "network; with --model a parameter of any layer of the cnn, resnet, "
                       "gpt, lstm, gru or rnn (a recurrent weight's gradient as its sum over "
                       "time steps). Each sum is checked against backward and finite "
                       "differences. --through-time follows the last position's gradient back "
                       "through a plain RNN and an LSTM: vanishing gradients.")
    e.add_argument("--x", default=None, help="input(s), e.g. 2 or 1,0.5 (default: §11's example)")
    e.add_argument("--w", default=None, help="weight(s), e.g. 0.5 or 0.2,-0.3")
    e.add_argument("--b", type=_float, default=None, help="bias")
    e.add_argument("--y", type=_float, default=None, help="target")
    e.add_argument("--activation", default="sigmoid",
                   choices=["sigmoid", "tanh", "relu", "leaky_relu", "identity"],
                   help="the activation of the neuron or of the network's hidden layers")
    e.add_argument("--loss", default="mse", choices=["mse", "binary_cross_entropy"],
                   help="the neuron's loss")
    e.add_argument("--network", type=_network_sizes, default=None, metavar="SIZES",
                   help="explain one weight of a small seeded network, e.g. 2-3-1")
    e.add_argument("--layer", type=_positive_int, default=1, help="layer l of W^(l)[i, j]")
    e.add_argument("--i", type=int, default=0, help="output neuron i")
    e.add_argument("--j", type=int, default=0, help="input neuron j")
    e.add_argument("--batch", type=_positive_int, default=2, help="examples in the batch")
    e.add_argument("--seed", type=_seed, default=0, help="seed of the network and the batch")
    e.add_argument("--model", default=None,
                   choices=["cnn", "resnet", "gpt", "lstm", "gru", "rnn"],
                   help="explain a parameter of any layer of this model (float64, seeded, on a "
                        "random batch): cnn and resnet as loopprop train builds them for 8×8 "
                        "digits, gpt a 2-layer GPT (2 heads, 16 wide, block 8, 11 tokens); "
                        "lstm, gru, rnn a 2-layer recurrent model (8 units, block 8, 11 tokens; "
                        "layer 2 is the first recurrent layer)")
    e.add_argument("--param", default="W",
                   help="with --model: the parameter array, e.g. W, b, gamma, beta, E, W_qkv, "
                   "W_h, W_x")
    e.add_argument("--index", type=_index, default=None, metavar="I,J,…",
                   help="with --model: the entry, one index per axis, e.g. 3,0,1,2 (default: 0s)")
    e.add_argument("--top", type=_positive_int, default=8,
                   help="with --model: how many of the largest terms to print")
    e.add_argument("--through-time", action="store_true",
                   help="‖∂L/∂h_t‖ of the last position's loss at every earlier step t, for a "
                   "plain RNN and an LSTM (64 units, 40 steps) on the same seeded batch")
    e.add_argument("--plot", metavar="PNG", default=None,
                   help="with --through-time: draw both curves (needs matplotlib)")

    d = sub.add_parser("diagram", help="Mermaid diagrams of a network's passes",
                       description="Print a Mermaid diagram (docs/formulas.md §13-§14) drawn "
                       "from a real network: workflow (the training loop), neuron (one "
                       "neuron's forward and backward), network (every layer's forward and "
                       "backward pass; the default) or cache (what each layer keeps for the "
                       "backward pass; unrolled: a recurrent layer unrolled over time steps). "
                       "Paste it into any Mermaid renderer.")
    d.add_argument("kind", nargs="?", default="network",
                   choices=["workflow", "neuron", "network", "cache", "unrolled"],
                   help="which diagram (default: network)")
    d.add_argument("--network", type=_network_sizes, default=[2, 3, 3, 1], metavar="SIZES",
                   help="layer sizes, e.g. 64-32-10 (default: 2-3-3-1)")
    d.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
                   help="hidden activation")
    d.add_argument("--output", default="sigmoid",
                   choices=["sigmoid", "softmax", "identity", "relu", "tanh", "leaky_relu"],
                   help="output activation")
    d.add_argument("--model", default="mlp",
                   choices=["mlp", "cnn", "resnet", "gpt", "lstm", "gru", "rnn"],
                   help="mlp: the --network sizes; cnn, resnet: the networks of loopprop train "
                        "for digits' 8×8 images; gpt: a 2-layer GPT (2 heads, 32 wide, block "
                        "16, 65 characters); lstm, gru, rnn: a 2-layer recurrent model (32 "
                        "units, block 16, 65 characters)")
    d.add_argument("--file", default=None, metavar="MODEL.npz",
                   help="draw a saved model instead (loopprop train --save)")
    d.add_argument("--batch-size", type=_positive_int, default=None,
                   help="the cache diagram's memory for a batch of this size")

    b = sub.add_parser("bench", help="time the headline workloads against NumPy (and torch)",
                       description="Time the README's workloads: loopprop against the leanest "
                       "NumPy and eager PyTorch (when installed), each row interleaved, best "
                       "of several rounds; ratios above 1 mean loopprop is faster.")
    b.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    b.add_argument("--quick", action="store_true",
                   help="three rounds instead of seven, and without the slow rows (the LeNet "
                   "and resnet epochs, the GPT step) unless -k names them: about two minutes")
    b.add_argument("-k", dest="select", metavar="TEXT", default=None,
                   help="only the workloads whose name holds TEXT, e.g. -k epoch, -k GPT, "
                   "-k warm")
    b.add_argument("--roofline", action="store_true",
                   help="measure the machine's peaks first (FMA throughput, read and copy "
                   "bandwidth from L2, L3 and DRAM, on one thread and on all) and print each "
                   "row's rate as a fraction of its roof")

    c = sub.add_parser("compile", help="compile ahead what a model needs (before a lab)",
                       description="Compile, or find in Numba's cache, everything `loopprop "
                       "train --model M` needs: its layer kinds' row functions one kind at a "
                       "time, then the epoch, evaluation and (language models) sampling. Later "
                       "runs start at "
                       "once. What compiles depends on the layer kinds and the dtype only.")
    c.add_argument("--model", action="append",
                   choices=["mlp", "cnn", "resnet", "gpt", "lstm", "gru", "rnn"],
                   help="a model to compile (repeat for several; default mlp)")
    c.add_argument("--all", action="store_true", help="every model")
    c.add_argument("--dtype", action="append", choices=["float64", "float32"],
                   help="a dtype to compile for (repeat for both; default: each model's own, "
                   "float64 for mlp/cnn/resnet and float32 for the language models)")
    c.add_argument("--no-progress", action="store_true", help="a line per step, no bar")
    return p
