"""The plan: one row of integers per layer, computed in one place, read by everything else.

A network is a list of layer objects (:mod:`loopprop.layers`) that *describe*; the plan turns
that list into a table that compiled code can walk without Python objects, in the style of
llm.c's one parameter buffer laid out from one table of sizes. Row ``r`` holds layer ``r``'s
kind code (:mod:`loopprop.layers.registry`), where its parameters live in the flat parameter
vector ``theta`` (and its gradients in ``grad``, at the same offsets), where its input and
output live in the activation buffer, where its caches and workspaces live, and its integer
hyperparameters. ``fplan`` holds the float hyperparameters (the leaky slope, the dropout
probability).

Offsets into the batch buffers (activations, their gradients, caches, per-example workspaces)
are counted **per example**: a region of ``size`` values per example starts at ``off · m`` and
is ``size · m`` long for a batch of ``m``, so one plan serves every batch size. Parameter
offsets and the fixed workspaces are absolute.

Buffers (all flat, allocated once per ``fit``):

* ``acts``  -- every layer's output, ``A^(0)`` (the input) first; a layer's input is the
  previous layer's output (``Flatten`` outputs the very same region: a reshape costs nothing);
* ``dacts`` -- the gradients of the loss w.r.t. the same values, same offsets. Every backward
  kernel *adds* into its input's gradient, so that two branches (a residual's skip path,
  attention's Q/K/V) can add into one ``dA``; each region is zeroed (or written, by a kernel
  that can) once per batch, just before the first row of the backward pass that adds into it
  (``train._backward_batch``);
* ``cache`` / ``icache`` -- what a forward pass keeps for its backward pass (im2col columns,
  ``A_prevᵀ``, dropout masks; max-pool winners as integers), docs/formulas.md §14;
* ``work`` -- per-example scratch (``dZᵀ``, the columns' gradient) and ``fwork`` -- fixed
  scratch and the caches whose size does not grow with the batch (``Wᵀ``; batch norm's mean
  and ``1/σ`` per channel).

Besides the batch buffers, a network owns ``state``: values that persist between batches and
are saved with the model but are not trained (batch norm's running mean and variance), at the
absolute offset ``S_OFF``.

A row may read a second input: ``IN2_OFF`` (per example, like ``IN_OFF``). A residual block's
closing row reads the block's input there (its ``skip_source``), adds it to the branch's
output, and in the backward pass adds its output's gradient into *both* inputs' gradients.
Containers (:class:`loopprop.layers.Residual`) are not rows themselves: :meth:`Layer.rows`
expands them into the rows they run.

A row may read the parameters of an earlier row (``shares_params_of``): GPT-2's output layer
reads the token embedding's ``E`` (:class:`loopprop.layers.TiedOutput`). Its ``P_OFF`` is the
owner's and its ``P_SIZE`` 0; both rows' backward kernels add into the one gradient.

Everything after the fixed columns is named by the layer: its integer settings from ``H0``
(:attr:`Layer.settings`), the absolute offsets of its parameter arrays in ``theta`` from
``ARRAY0`` (:attr:`Layer.param_names`) and the offsets of the named parts of its cache and
workspaces from ``PART0`` (``cache_parts``, ``work_parts``, ``fixed_work_parts``). A row
function finds each by :meth:`Layer.column` -- ``plan[r, Dense.column("n_in")]`` -- never by
adding up shapes; :func:`build` computes every offset once, from what the layers declare.
"""

from __future__ import annotations

import numpy as np

# column names of the integer plan: the kind's code (loopprop/layers/registry.py) and whether
# its backward row writes its input's gradient (the registry's ``writes_dx``), then the offsets
(KIND, WRITES_DX, P_OFF, P_SIZE, IN_OFF, IN_SIZE, OUT_OFF, OUT_SIZE, C_OFF, IC_OFF, WK_OFF,
 WF_OFF, S_OFF, IN2_OFF) = range(14)
#: the first column of the layer's integer settings (:attr:`Layer.settings`); ``N_HYPER`` of them
H0 = 14
N_HYPER = 12
#: the first column of the absolute offsets of the row's parameter arrays in ``theta``
#: (:attr:`Layer.param_names`, in order); ``N_ARRAYS`` of them
ARRAY0 = H0 + N_HYPER
N_ARRAYS = 4
#: the first column of the offsets of the row's named parts of its cache, workspace and fixed
#: workspace (:attr:`Layer.cache_parts`, ``work_parts``, ``fixed_work_parts``, in that order):
#: per example for the first two, absolute for the fixed one; ``N_PARTS`` of them
PART0 = ARRAY0 + N_ARRAYS
N_PARTS = 16
N_COLS = PART0 + N_PARTS
#: float hyperparameters per row
N_FLOAT = 2


def expand(layers) -> list:
    """The plan's rows: every layer's :meth:`~loopprop.layers.base.Layer.rows`, in order."""
    return [row for layer in layers for row in layer.rows()]


def build(layers, input_shape, kinds) -> dict:
    """Lay out every buffer for ``layers`` applied to examples of ``input_shape``.

    ``layers`` are the rows (:func:`expand`), each already built (:meth:`Layer.build`) in
    order; ``kinds`` their registry entries (:func:`loopprop.layers.registry.kind_of`).
    Returns a dict with ``plan (L, N_COLS) int64``, ``fplan (L, N_FLOAT) float64``, the
    per-example sizes of the buffers (``acts``, ``cache``, ``icache``, ``work``), the
    absolute ones (``params``, ``fwork``, ``state``), and each row's named arrays:
    ``arrays[r]`` maps a parameter array's name to its ``(offset, shape)`` in ``theta``,
    ``states[r]`` a state array's in ``state`` (every other module reads these instead of
    adding up shapes).
    """
    L = len(layers)
    plan = np.zeros((L, N_COLS), np.int64)
    fplan = np.zeros((L, N_FLOAT), np.float64)
    p_off = 0
    a_off = int(np.prod(input_shape))  # A^(0) first
    in_off, in_size = 0, a_off
    c_off = ic_off = wk_off = wf_off = s_off = 0
    input_of: dict[int, int] = {}  # id(row) -> its input's offset, for second inputs
    arrays: list[dict] = []  # per row: parameter name -> (offset in theta, shape)
    states: list[dict] = []  # per row: state name -> (offset in state, shape)
    for r, layer in enumerate(layers):
        out_size = int(np.prod(layer.out_shape))
        row = plan[r]
        row[KIND] = kinds[r].code
        row[WRITES_DX] = kinds[r].writes_dx
        n_params = layer.n_params
        row[P_OFF], row[P_SIZE] = (p_off, n_params) if n_params else (-1, 0)
        if layer.shares_params_of is not None:  # reads another row's parameters (tied)
            owner = next((v for v in layers if isinstance(v, layer.shares_params_of)), None)
            if owner is None:
                raise ValueError(f"{layer!r} reads the parameters of a "
                                 f"{layer.shares_params_of.__name__} layer: the network has "
                                 "none; add one (or use an untied layer such as Dense)")
            layer.check_shared(owner)
            row[P_OFF] = plan[layers.index(owner), P_OFF]
        arrays.append(_named(layer, layer.param_names, layer.param_shapes(), p_off))
        states.append(_named(layer, layer.state_names, layer.state_shapes(), s_off))
        p_off += n_params
        row[IN_OFF], row[IN_SIZE] = in_off, in_size
        input_of[id(layer)] = in_off
        source = getattr(layer, "skip_source", None)
        row[IN2_OFF] = -1 if source is None else input_of.get(id(source), in_off)
        if layer.aliases_input:  # Flatten: the same values, seen in another shape
            out_off = in_off
        else:
            out_off = a_off
            a_off += out_size
        row[OUT_OFF], row[OUT_SIZE] = out_off, out_size
        row[C_OFF] = c_off
        c_off += layer.cache_size
        row[IC_OFF] = ic_off
        ic_off += layer.icache_size
        row[WK_OFF] = wk_off
        wk_off += layer.work_size
        row[WF_OFF] = wf_off
        wf_off += layer.fixed_work_size
        row[S_OFF] = s_off
        s_off += layer.state_size
        ints = layer.ints()
        if len(ints) > N_HYPER or (layer.settings and len(ints) != len(layer.settings)):
            raise RuntimeError(f"{type(layer).__name__}: ints() gave {len(ints)} values for the "
                               f"settings {layer.settings} (at most {N_HYPER})")
        row[H0:H0 + len(ints)] = ints
        own = arrays[-1] if layer.shares_params_of is None else {}
        if len(own) > N_ARRAYS:  # pragma: no cover - a layer author's mistake
            raise RuntimeError(f"{type(layer).__name__} has more than {N_ARRAYS} arrays")
        row[ARRAY0:ARRAY0 + N_ARRAYS] = -1
        row[ARRAY0:ARRAY0 + len(own)] = [off for off, _ in own.values()]
        row[PART0:PART0 + N_PARTS] = -1
        _place_parts(layer, row)
        floats = layer.floats()
        fplan[r, :len(floats)] = floats
        in_off, in_size = out_off, out_size
    last = layers[-1].out_shape
    return {"plan": plan, "fplan": fplan, "params": p_off, "acts": a_off, "cache": c_off,
            "icache": ic_off, "work": wk_off, "fwork": wf_off, "state": s_off,
            "positions": int(np.prod(last[1:])), "arrays": arrays, "states": states}


def _place_parts(layer, row) -> None:
    """Write the offsets of ``layer``'s named parts (:meth:`Layer.part_sizes`) into its plan
    row: each region's parts one after another from the region's start, per example for the
    cache and the workspace, absolute for the fixed workspace; their sizes must add up to the
    region's."""
    groups = ((layer.cache_parts, C_OFF, layer.cache_size),
              (layer.work_parts, WK_OFF, layer.work_size),
              (layer.fixed_work_parts, WF_OFF, layer.fixed_work_size))
    sizes = layer.part_sizes() if any(names for names, _, _ in groups) else {}
    if sum(len(names) for names, _, _ in groups) > N_PARTS:  # pragma: no cover - an author's
        raise RuntimeError(f"{type(layer).__name__} has more than {N_PARTS} parts")
    col = PART0
    for names, start, total in groups:
        off = int(row[start])
        for name in names:
            row[col] = off
            off += int(sizes[name])
            col += 1
        if names and off - int(row[start]) != total:  # pragma: no cover - an author's mistake
            raise RuntimeError(f"{type(layer).__name__}: the parts {names} add up to "
                               f"{off - int(row[start])} values, the region holds {total}")


def _named(layer, names, shapes, off: int) -> dict[str, tuple[int, tuple[int, ...]]]:
    """A layer's arrays by name: ``{name: (offset, shape)}``, laid out one after another from
    ``off`` in the order the layer declares them (:attr:`Layer.param_names` with
    :meth:`Layer.param_shapes`; :attr:`Layer.state_names` with :meth:`Layer.state_shapes`)."""
    shapes = [tuple(int(v) for v in shape) for shape in shapes]
    if shapes and len(names) != len(shapes):  # pragma: no cover - a layer author's mistake
        raise RuntimeError(f"{type(layer).__name__} names {len(names)} arrays {names} but "
                           f"declares {len(shapes)} shapes")
    out = {}
    for name, shape in zip(names, shapes):
        out[name] = (off, shape)
        off += int(np.prod(shape))
    return out


class Buffers:
    """The batch buffers of a plan for batches of up to ``m`` examples (see the module
    docstring); allocated once, reused by every batch."""

    def __init__(self, layout: dict, m: int, dtype) -> None:
        self.m = m
        self.acts = np.zeros(max(layout["acts"] * m, 1), dtype)
        self.dacts = np.zeros(max(layout["acts"] * m, 1), dtype)
        self.cache = np.zeros(max(layout["cache"] * m, 1), dtype)
        self.icache = np.zeros(max(layout["icache"] * m, 1), np.int32)
        self.work = np.zeros(max(layout["work"] * m, 1), dtype)
        self.fwork = np.zeros(max(layout["fwork"], 1), dtype)
        # the loss's per-column workspaces: a column per example and output position
        self.col1 = np.zeros(m * layout["positions"], dtype)
        self.col2 = np.zeros(m * layout["positions"], np.float64)
