"""The registry of layer kinds and the epoch compiled once: every kind complete, every layer
class known, a new composition of compiled kinds compiling nothing, a network never compiling
a kind it lacks."""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import numba
import pytest

import loopprop as lp
from loopprop import bundles, layers
from loopprop import plan as P
from loopprop.layers import registry
from loopprop.layers.base import Layer

ROOT = pathlib.Path(__file__).resolve().parents[1]
JIT_OFF = numba.config.DISABLE_JIT
ROW_PARAMS = ["r", "plan", "fplan", "b", "s"]


def formulas_headings() -> set[str]:
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    return {m.group(1).strip() for m in re.finditer(r"^#{2,3} (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("kind", registry.REGISTRY, ids=lambda k: k.name)
def test_every_registry_entry_is_complete(kind):
    """A kind missing any part fails here: its code, a layer class, two row functions of the
    one signature, a section of docs/formulas.md, an explanation when it owns parameters, a
    decode row of the decode signature when it has one."""
    assert isinstance(kind.code, int) and 1 <= kind.code < registry.N_CODES
    assert inspect.isclass(kind.layer) and issubclass(kind.layer, Layer)
    for fn in (kind.forward, kind.backward):
        assert list(inspect.signature(fn).parameters) == ROW_PARAMS, fn.__name__
        assert fn.__doc__, f"{fn.__name__} has no docstring"
    assert kind.formulas in formulas_headings(), (
        f"{kind.name}: docs/formulas.md has no section {kind.formulas!r}")
    owns = (kind.layer.param_shapes is not Layer.param_shapes
            and kind.layer.shares_params_of is None)
    assert (kind.explain is not None) == owns, (
        f"{kind.name}: a kind that owns parameters explains them (explain_layers), no other")
    if kind.decode is not None:
        params = list(inspect.signature(kind.decode).parameters)
        assert params == ROW_PARAMS + ["kv", "kv_off", "pos"], kind.decode.__name__


def test_codes_are_unique_and_every_layer_class_has_a_kind():
    codes = [k.code for k in registry.REGISTRY]
    assert sorted(codes) == list(range(1, registry.N_CODES)), codes
    assert len({k.layer for k in registry.REGISTRY}) == len(codes)
    public = [getattr(layers, name) for name in layers.__all__]
    classes = [c for c in public if inspect.isclass(c) and issubclass(c, Layer) and c is not Layer]
    assert set(registry.CLASSES.values()) == set(classes), "save/load must know every class"
    for cls in classes:  # every class has its own entry or a registered base class's
        assert any(issubclass(cls, k.layer) for k in registry.REGISTRY), cls.__name__


def test_an_unregistered_layer_class_is_refused_with_the_fix():
    class Mine(Layer):
        def _build(self, in_shape):
            return in_shape

    with pytest.raises(TypeError, match="registry.py"):
        lp.Network([Mine(), lp.layers.Softmax()], loss="cross_entropy", input_shape=(3,))


def test_the_plan_records_which_backward_rows_write_their_input_gradient():
    net = lp.models.gpt(11, 8, 1, 2, 8)
    for r, row in enumerate(net.rows):
        entry = registry.kind_of(row)
        assert net.plan[r, P.KIND] == entry.code
        assert net.plan[r, P.WRITES_DX] == isinstance(row, (lp.layers.Activation,
                                                             lp.layers.LayerNorm))


def test_the_experimental_feature_warning_never_reaches_a_user():
    """The epoch calls rows through first-class functions, which Numba calls experimental on
    the first compile; loopprop silences that one warning and no other."""
    from numba.core.errors import NumbaExperimentalFeatureWarning

    lp.Network([3, 2], ["softmax"], "cross_entropy")._table()  # what every pass asks for first
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn("First-class function type feature is experimental",
                      NumbaExperimentalFeatureWarning, stacklevel=1)
        warnings.warn("something else experimental", NumbaExperimentalFeatureWarning,
                      stacklevel=1)
    assert len(seen) == 1 and "something else experimental" in str(seen[0].message)


def test_rows_are_compiled_sources_of_the_cache_stamp():
    """Row functions are compiled by the dispatch, not decorated: their files must still count
    for the stamp that keeps the cache from running old machine code."""
    from loopprop import _cache

    sources = {os.path.relpath(p, _cache.PACKAGE_DIR) for p in _cache.compiled_sources()}
    for name in ("conv", "dense", "elementwise", "norm", "sequence", "common"):
        assert os.path.join("rows", f"{name}.py") in sources
    assert "bundles.py" in sources and "dispatch.py" in sources


COMPOSITIONS = r"""
import json, numpy as np, loopprop as lp
from loopprop import dispatch, train
from loopprop.layers import Dense, ReLU, Softmax, Tanh
rng = np.random.default_rng(0)
X, y = rng.standard_normal((6, 40)), rng.integers(0, 3, 40)
nets = [lp.Network([6, 8, 3], ["relu", "softmax"], "cross_entropy"),
        lp.Network([Dense(5), Tanh(), Dense(7), ReLU(), Dense(3), Softmax()],
                   loss="cross_entropy", input_shape=(6,)),
        lp.Network([6, 3], ["softmax"], "cross_entropy")]
counts = []
for net in nets:
    net.fit(X, y, epochs=1, batch_size=8, progress=False)
    net.evaluate(X, y)
    counts.append([len(train._train_epoch.signatures), len(train._evaluate.signatures)])
print(json.dumps({"counts": counts, "compiled": sorted(n for n, _ in dispatch.compiled_kinds())}))
"""


@pytest.mark.skipif(JIT_OFF, reason="compiled signatures exist only with the JIT on")
def test_new_compositions_of_compiled_kinds_compile_no_new_epoch():
    """Three networks of the same kinds in different compositions share one compiled epoch
    (its signatures do not grow), and only their kinds' rows are compiled (a fresh process:
    nothing else has compiled a convolution's rows)."""
    out = subprocess.run([sys.executable, "-c", COMPOSITIONS], capture_output=True, text=True,
                         timeout=900, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["counts"] == [[1, 1]] * 3, got["counts"]
    assert set(got["compiled"]) == {"none_row", "dense_forward",
                                    "dense_backward", "activation_forward",
                                    "activation_backward"}, got["compiled"]
    assert "experimental" not in out.stderr


def test_tables_are_shared_and_hold_no_ops_for_absent_kinds():
    net = lp.Network([4, 3], ["softmax"], "cross_entropy")
    t = net._table()
    assert t is net._table()  # one table per set of kinds and dtype
    conv = next(k for k in registry.REGISTRY if k.layer is lp.layers.Conv2d)
    dense = next(k for k in registry.REGISTRY if k.layer is lp.layers.Dense)
    for column in (t.forward, t.backward):  # code 0 is no kind: the no-op
        assert (column[conv.code] == column[0]).all()
        assert not (column[dense.code] == column[0]).all()
    assert t.forward.shape == t.backward.shape == t.decode.shape == (registry.N_CODES, 2)
    assert isinstance(t, bundles.Table) and t.like.dtype == net.dtype


def test_a_network_with_a_bare_activation_saves_and_loads(tmp_path):
    """``Activation()`` (the identity, the base of every activation) is a layer class a model
    file may name: it could be saved but not loaded ("unknown layer")."""
    import numpy as np

    net = lp.Network([lp.layers.Dense(3), lp.layers.Activation(), lp.layers.Dense(2),
                      lp.layers.Softmax()], loss="cross_entropy", input_shape=(4,), seed=1)
    net.save(tmp_path / "act.npz")
    back = lp.Network.load(tmp_path / "act.npz")
    X = np.random.default_rng(0).standard_normal((4, 5))
    assert [type(v).__name__ for v in back.layers] == ["Dense", "Activation", "Dense", "Softmax"]
    np.testing.assert_array_equal(back.forward(X), net.forward(X))


def test_no_function_of_the_epoch_or_dispatch_takes_more_than_twelve_arguments():
    """The compiled passes take named bundles (loopprop/bundles.py), not loose buffers: the
    epoch took 34 arguments and every backward row 17 before."""
    import ast

    files = [ROOT / "loopprop" / name for name in ("train.py", "dispatch.py", "generate.py")]
    files += sorted((ROOT / "loopprop" / "rows").glob("*.py"))
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and len(node.args.args) > 12:
                long.append(f"{path.name}:{node.name} ({len(node.args.args)})")
    assert not long, long
