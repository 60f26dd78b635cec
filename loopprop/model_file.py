"""The model file: one ``.npz`` holding a network's layers (kind and hyperparameters), input
shape, loss, dtype, weights, state and metadata, with a format version.

:func:`save` writes it atomically (a failed save leaves the old file); :func:`load` checks every
field of the metadata and the stored arrays' headers against each other before anything is
allocated, so that a damaged or foreign file raises :class:`ModelFileError` naming the file and
what is wrong, and nothing is half-loaded. :meth:`loopprop.Network.save` and
:meth:`~loopprop.Network.load` call these.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from . import _files
from . import plan as _plan
from .layers import Layer
from .layers.registry import CLASSES as KINDS

#: version 3 adds the state (batch norm's running statistics); version 2 stores the list of
#: layers (kind and hyperparameters); version 1 files (dense layer sizes and activation names)
#: still load
FORMAT_VERSION = 3


def layer_from_spec(spec: dict) -> Layer:
    """The layer a spec ``{"kind": name, "config": {...}}`` of a model file describes; a
    container's ``layers`` (a residual block's) are specs too, built the same way."""
    config = dict(spec.get("config", {}))
    inner = config.get("layers")
    if isinstance(inner, list):
        config["layers"] = [layer_from_spec(v) if isinstance(v, dict) else v for v in inner]
    kind = KINDS.get(spec.get("kind")) if isinstance(spec.get("kind"), str) else None
    if kind is None:
        raise ValueError(f"unknown layer {str(spec)[:80]}")
    return kind(**config)


class ModelFileError(ValueError):
    """A model file that cannot be loaded: truncated, corrupted, not a model, or too new."""


#: the largest network a model file may describe (parameters), checked before allocating
_MAX_FILE_PARAMS = 1 << 34


def _check_meta(meta: Any, name: str) -> dict:
    """The metadata of a model file, every field checked for type and range (no allocation).

    Raises :class:`ModelFileError` naming the file and the field."""
    if not isinstance(meta, dict) or meta.get("format") != "loopprop.Network":
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{name}: not a loopprop model (format is {got!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{name}: format_version must be a positive integer, got "
                             f"{version!r}: the file is corrupted")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{name}: format version {version} is newer than this loopprop understands "
            f"({FORMAT_VERSION}); upgrade loopprop to load it"
        )
    out: dict[str, Any] = {"format_version": version}
    for key, kind, default in (("loss", str, None), ("dtype", str, None), ("seed", int, 0),
                               ("init", str, "he"), ("alpha", (int, float), 0.01)):
        value = meta.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise ModelFileError(f"{name}: the field {key!r} is missing or has the wrong type "
                                 f"({value!r}): the file is corrupted")
        out[key] = value
    extra = meta.get("metadata", {})
    if not isinstance(extra, dict):
        raise ModelFileError(f"{name}: the field 'metadata' must be a JSON object, got "
                             f"{type(extra).__name__}: the file is corrupted")
    out["metadata"] = extra
    if out["dtype"] not in ("float32", "float64"):
        raise ModelFileError(f"{name}: dtype must be 'float32' or 'float64', got "
                             f"{out['dtype']!r}: the file is corrupted")
    if version >= 2:
        return _check_layers_meta(meta, name, out)
    sizes = meta.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                       for v in sizes)):
        raise ModelFileError(f"{name}: layer_sizes must be a list of at least two positive "
                             f"integers, got {str(sizes)[:80]}: the file is corrupted")
    n_params = sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))
    if n_params > _MAX_FILE_PARAMS:
        raise ModelFileError(f"{name}: layer_sizes {sizes} describe {n_params:.3g} parameters, "
                             "more than any real model file holds: the file is corrupted")
    acts = meta.get("activations")
    if not isinstance(acts, list):
        raise ModelFileError(f"{name}: the field 'activations' is missing or has the wrong type "
                             f"({acts!r}): the file is corrupted")
    out.update(layer_sizes=sizes, activations=acts, n_params=n_params)
    return out


#: the deepest nesting of layers (a Residual's branch holding a Residual …) a model file may
#: describe: building them recurses once per level
_MAX_NESTING = 32


def _nesting_depth(specs: list) -> int:
    """How deep the layer specs of a model file nest (1: no block holds another), walked
    without recursion so that a crafted file cannot exhaust the stack."""
    deepest, todo = 0, [(specs, 1)]
    while todo:
        items, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > _MAX_NESTING:
            break
        for spec in items:
            inner = spec.get("config", {}).get("layers") if isinstance(spec, dict) and \
                isinstance(spec.get("config"), dict) else None
            if isinstance(inner, list):
                todo.append((inner, depth + 1))
    return deepest


def _check_tokenizer(meta: dict, name: str) -> None:
    """A character tokenizer saved with a language model must have as many characters as the
    model has output classes (a crafted file once sampled with a vocabulary of another size)."""
    tok = meta["metadata"].get("tokenizer")
    if not isinstance(tok, dict) or "layers" not in meta:
        return
    chars = tok.get("chars")
    vocab = getattr(meta["layers"][0], "vocab_size", None)
    if not isinstance(chars, str) or len(set(chars)) != len(chars):
        raise ModelFileError(f"{name}: the tokenizer's characters must be a string of distinct "
                             "characters: the file is corrupted")
    if vocab is not None and len(chars) != vocab:
        raise ModelFileError(f"{name}: the tokenizer has {len(chars)} characters but the model's "
                             f"embedding has {vocab} tokens: the file is corrupted")


def _check_layers_meta(meta: dict, name: str, out: dict) -> dict:
    """Version 2: ``layers`` (kind and hyperparameters of each) and ``input_shape``; the
    layers are built (which allocates nothing) to count the parameters the file must hold."""
    shape = meta.get("input_shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise ModelFileError(f"{name}: input_shape must be a list of positive integers, got "
                             f"{str(shape)[:80]}: the file is corrupted")
    specs = meta.get("layers")
    if not isinstance(specs, list) or not specs:
        raise ModelFileError(f"{name}: 'layers' must be a non-empty list: the file is corrupted")
    depth = _nesting_depth(specs)
    if depth > _MAX_NESTING:
        raise ModelFileError(f"{name}: the layers are nested more than {_MAX_NESTING} deep "
                             "(residual blocks inside residual blocks), deeper than any real "
                             "model: the file is corrupted")
    layers = []
    try:
        for spec in specs:
            if not (isinstance(spec, dict) and spec.get("kind") in KINDS
                    and isinstance(spec.get("config", {}), dict)):
                raise ValueError(f"unknown layer {str(spec)[:80]}")
            layers.append(layer_from_spec(spec))
        n_params, n_state = _built_size(layers, tuple(shape))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: the layers in the file are invalid: {exc}") from exc
    if n_params > _MAX_FILE_PARAMS:
        raise ModelFileError(f"{name}: the layers describe {n_params:.3g} parameters, more than "
                             "any real model file holds: the file is corrupted")
    out.update(layers=layers, input_shape=tuple(shape), n_params=n_params, n_state=n_state)
    sizes, acts = meta.get("layer_sizes"), meta.get("activations")
    if isinstance(sizes, list) and isinstance(acts, list):  # saved in the layer-sizes form
        out.update(layer_sizes=sizes, activations=acts)
    return out


def _built_size(layers: list, input_shape: tuple) -> tuple[int, int]:
    """Build ``layers`` on ``input_shape``; return their parameter and state counts (no
    allocation)."""
    shape = input_shape
    for layer in layers:
        shape = layer.build(shape)
    rows = _plan.expand(layers)
    return sum(row.n_params for row in rows), sum(row.state_size for row in rows)


def _check_stored(data, entry: str, what: str, size: int, dtype: str, name: str) -> None:
    """``entry`` of an open ``.npz`` must hold ``size`` values of ``dtype`` (its header is read,
    not its data): else :class:`ModelFileError`."""
    shape, stored = _stored_shape(data, entry, name)
    if shape != (size,) or stored != np.dtype(dtype):
        raise ModelFileError(f"{name}: the stored {what}: shape {shape}, dtype {stored}; the "
                             f"architecture needs ({size},) {dtype}: the file is corrupted")


def _stored_shape(data, entry: str, name: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of ``entry`` in an open ``.npz``, read from its header alone."""
    with data.zip.open(data.zip.getinfo(entry + ".npy")) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ModelFileError(f"{name}: the {entry} array is stored in .npy format "
                                 f"{version}, which Network.save never writes")
        shape, _, dtype = read_header(fh)
    return shape, dtype


def save(net, path: str | os.PathLike) -> None:
    """Write ``net`` to one ``.npz`` file: the layers (kind and hyperparameters), input shape, loss,
    dtype, the weights, the state, :attr:`metadata` and a format version."""
    meta = {
        "format": "loopprop.Network",
        "format_version": FORMAT_VERSION,
        "layers": [{"kind": type(layer).__name__, "config": layer.config()}
                   for layer in net.layers],
        "input_shape": list(net.input_shape),
        "loss": net.loss,
        "dtype": net.dtype.name,
        "seed": net.seed,
        "init": net.init,
        "alpha": net.alpha,
        "n_params": int(net.flat_params.size),
        "n_state": int(net.flat_state.size),
        "metadata": net.metadata,
    }
    if net.layer_sizes is not None:  # the layer-sizes form, rebuilt as such on load
        meta["layer_sizes"] = net.layer_sizes
        meta["activations"] = net.activations
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metadata: net.metadata must hold only JSON values (str, int, float, bool, "
            f"None, lists and dicts of them), finite numbers; {exc}. Convert NumPy values "
            "with .item() or .tolist() before saving; nothing was written"
        ) from None
    _files.atomic_write(path, lambda fh: np.savez(fh, meta=np.array(text),
                                                   theta=net.flat_params, state=net.flat_state))


def load(cls, path: str | os.PathLike):
    """Read a file written by :func:`save` as a network of class ``cls``.

    A missing file raises ``FileNotFoundError``; a damaged or foreign file (not a ``.npz``,
    a plain ``.npy`` array, a text file, metadata that does not describe a network, weights
    that do not fit the architecture) raises :class:`ModelFileError` naming the file and
    what is wrong. The metadata and the size of the stored weights are checked against each
    other before anything is allocated, and nothing is half-loaded.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"{name}: no such model file; write one with net.save(path) "
                                "or loopprop train --save PATH")
    if os.path.isdir(name):
        raise ModelFileError(f"{name}: is a directory, not a model file (.npz)")
    try:
        data = np.load(name, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(
            f"{name}: not a loopprop model file (a .npz written by Network.save); NumPy could "
            f"not read it ({type(exc).__name__})"
        ) from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ModelFileError(
            f"{name}: holds a single NumPy array ({type(data).__name__}), not a loopprop "
            "model (a .npz written by Network.save)"
        )
    try:
        with data:
            if "meta" not in data.files or "theta" not in data.files:
                raise ModelFileError(f"{name}: not a loopprop model (no meta/theta entries)")
            try:
                meta = json.loads(str(data["meta"][()]))
            except RecursionError:
                raise ModelFileError(f"{name}: the metadata is nested deeper than any "
                                     "model's layers are: the file is corrupted") from None
            meta = _check_meta(meta, name)
            _check_tokenizer(meta, name)
            # the stored arrays' headers say their shapes before any of them is read
            _check_stored(data, "theta", "weights", meta["n_params"], meta["dtype"], name)
            state = None
            if meta["format_version"] >= 3:
                if "state" not in data.files:
                    raise ModelFileError(f"{name}: a version-3 model without its state "
                                         "(running statistics): the file is corrupted")
                _check_stored(data, "state", "state", meta["n_state"], meta["dtype"], name)
                state = np.array(data["state"])
            theta = np.array(data["theta"])
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"{name}: cannot read a loopprop model ({type(exc).__name__}: {exc}); the file "
            "is truncated, corrupted or not a model saved by Network.save"
        ) from exc
    kw = {"dtype": meta["dtype"], "seed": meta["seed"], "init": meta["init"],
          "alpha": meta["alpha"]}
    try:
        if "layer_sizes" in meta or meta["format_version"] == 1:
            net = cls(meta["layer_sizes"], meta["activations"], meta["loss"], **kw)
        else:
            net = cls(meta["layers"], loss=meta["loss"], input_shape=meta["input_shape"],
                      **kw)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: the architecture in the file is invalid: {exc}") \
            from exc
    if not np.isfinite(theta).all():
        raise ModelFileError(f"{name}: the weights contain NaN or Inf: the file is corrupted")
    net.metadata = meta["metadata"]
    net.flat_params[:] = theta
    if state is not None:
        if not np.isfinite(state).all():
            raise ModelFileError(f"{name}: the state contains NaN or Inf: the file is "
                                 "corrupted")
        net.flat_state[:] = state
    return net


__all__ = ["FORMAT_VERSION", "ModelFileError", "layer_from_spec", "load", "save"]
