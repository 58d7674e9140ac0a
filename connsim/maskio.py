"""Reading and writing masks: ``.npz``, safetensors, and PyTorch ``.pt``/``.pth`` without torch.

Files hold one array per prunable layer. A file's keys are mapped to the architecture's layers by
name (``fc1``, ``fc1.weight``, ``fc1.weight_mask`` all name layer ``fc1``), else by order and shape of
its 2-D/4-D arrays. For each layer a ``*_mask`` entry is used when present (what
``torch.nn.utils.prune`` saves); otherwise the mask is inferred as ``weight != 0`` (or
``weight_orig != 0``). Masks and weights must be boolean or real numbers.

PyTorch files are read from their zip archive through a restricted unpickler that admits only the
tensor-rebuild function, the storage type names and ``OrderedDict``; anything else (a pickled
module, a call to ``os.system``) is refused. The legacy pre-1.6 non-zip format is not supported.
Writes are atomic: a temporary file in the target folder is renamed over the target.
Reads are lazy where it saves memory: :func:`load_masks` learns every entry's shape first and then
reads and converts one entry at a time, so that it holds the masks it returns plus one raw entry
(the float weights of one layer, say), never the whole file (``docs/performance.md``).

Hostile files
-------------
Whatever the bytes, every reader fails with :class:`MaskFileError` (or
:class:`~connsim.safepickle.UnsafePickleError` for a pickle that names code, ``FileNotFoundError``
for a path with no file), and its memory stays in proportion to the file:

- Every array must be backed by the bytes the file holds. A zip member (of an ``.npz`` or a
  PyTorch file) must lie within the file and may expand no further than deflate can (1032:1), as
  its zip directory is checked before anything is decompressed; a ``.npy`` header must describe
  exactly the bytes of its member; a PyTorch storage must hold the elements it declares.
- What metadata alone can inflate is bounded by the **memory budget** of the file,
  ``max(64 MiB, 16 × its size on disk)`` bytes (:class:`MemoryBudget`): in a PyTorch file the
  members read and every tensor built from a storage (a zero-stride view of one element can declare
  any size), in an ``.npz`` the elements of zero-size dtypes, counted at a byte each. A file that
  asks for more is refused with the memory it would need. Legitimate files stay far below: their
  tensors are as large as their storages, and a compressed ``.npz`` of a sparse mask, which
  legitimately expands 50-300 fold, is bounded by the first rule instead.
- Nesting is bounded: dicts in a PyTorch file at most 64 levels deep, self-references refused (see
  also :mod:`connsim.safepickle`).

safetensors checks by itself that every tensor lies within the file.
"""

from __future__ import annotations

import collections
import contextlib
import math
import operator
import os
import re
import reprlib
import stat
import sys
import zipfile
from collections.abc import Mapping

import numpy as np

from ._validation import check_mask
from .architectures import Architecture
from .files import atomic_write
from .masks import check_masks, from_layout, to_layout
from .safepickle import MAX_DEPTH, UnsafePickleError, restricted_loads

__all__ = [
    "MaskFileError", "load_masks", "load_weights", "read_arrays", "save_masks",
]


_TORCH_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
MIN_BUDGET = 64 * 2**20
BUDGET_RATIO = 16
_DEFLATE_MAX_RATIO = 1032  # a 258-byte match costs deflate at least 2 bits
_READ_CHUNK = 2**18  # bytes of a PyTorch storage read at a time (as NumPy reads .npy data)


class MaskFileError(ValueError):
    """A mask file is missing, truncated, tampered with, or does not fit the architecture.

    A subclass of :class:`ValueError`; the message names the file and the entry at fault.

    See Also
    --------
    load_masks : Raises it.
    read_arrays : Raises it for a file that cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> from connsim import get_arch
    >>> path = os.path.join(tempfile.mkdtemp(), "broken.npz")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"not a zip archive")
    >>> try:
    ...     load_masks(path, get_arch("mlp:4-3-2"))
    ... except MaskFileError:
    ...     print("refused")
    refused
    """


def describe_error(e: BaseException) -> str:
    """'zlib.error: Error -3 ...': the type and at most 300 characters of the text of an exception
    raised on hostile data (whose text may be huge, or may itself fail to format)."""
    try:
        text = str(e)
    except Exception:  # e.g. a KeyError holding a deeply nested key
        text = ""
    kind = type(e).__name__ if type(e).__module__ == "builtins" else (
        f"{type(e).__module__}.{type(e).__name__}")
    return f"{kind}: {text[:300]}" if text else kind


def format_nbytes(n: int) -> str:
    """A byte count for messages: '3.6 GiB'."""
    if n >= 2**60:
        return f"more than 2^{n.bit_length() - 1} bytes"
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


class MemoryBudget:
    """What a file may make a reader allocate beyond the data it holds: ``max(64 MiB, 16 × its
    size)`` bytes (see the module docstring).

    Parameters
    ----------
    path : str
        The file, for messages.
    file_size : int
        Its size on disk in bytes.
    error : type of Exception
        What :meth:`charge` raises.
    """

    def __init__(self, path: str, file_size: int, error: type[Exception] = MaskFileError):
        self.path, self.file_size, self.error = path, file_size, error
        self.limit = max(MIN_BUDGET, BUDGET_RATIO * file_size)
        self.left = self.limit

    def charge(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` more bytes needed by ``what``; raise once over the budget."""
        if nbytes > self.left:
            raise self.error(
                f"{self.path!r}: {what} would need {format_nbytes(nbytes)} of memory, but a file of "
                f"{self.file_size} bytes may make connsim allocate at most "
                f"{format_nbytes(self.limit)} (max({format_nbytes(MIN_BUDGET)}, {BUDGET_RATIO} x its "
                "size)); it is refused as corrupt or hostile"
            )
        self.left -= nbytes


# ------------------------------------------------------------------------- readers


class _Storage:
    """Stand-in for a torch storage class: carries only the element dtype."""

    def __init__(self, name):
        self.name = name


def _rebuild_parameter(data, *_ignored):
    return data


def _check_dict_state(state) -> None:
    """What an ``OrderedDict`` in a state dict restores: attributes such as ``_metadata``."""
    if not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
        raise UnsafePickleError("refusing to restore anything but named attributes into a dict")


@contextlib.contextmanager
def _zip_archive(path: str, not_zip: str):
    """Open ``path`` as a zip archive whose directory has been checked (module docstring, first
    rule); yield it and the file's size. ``not_zip`` starts the message when it is no zip."""
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise MaskFileError(f"cannot read {path!r}: {e.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            zf = zipfile.ZipFile(fh)
        except Exception as e:  # zipfile fails in many ways on garbage (struct.error, ...)
            raise MaskFileError(f"{not_zip}: {describe_error(e)}") from None
        with zf:
            compressed = 0
            for info in zf.infolist():
                where = f"{path!r}: member {reprlib.repr(info.filename)}"
                if info.flag_bits & 0x1:
                    raise MaskFileError(f"{where} is encrypted; connsim reads plain archives only")
                if info.compress_type == zipfile.ZIP_STORED:
                    most = info.compress_size
                elif info.compress_type == zipfile.ZIP_DEFLATED:
                    most = _DEFLATE_MAX_RATIO * info.compress_size
                else:
                    raise MaskFileError(f"{where} uses zip compression method {info.compress_type}; "
                                        "numpy and torch write stored or deflated members only")
                if info.file_size > most:
                    raise MaskFileError(
                        f"{where} claims {info.file_size} bytes from {info.compress_size} compressed "
                        "bytes, more than its compression can produce (corrupt or hostile zip)")
                compressed += info.compress_size
            if compressed > size:
                raise MaskFileError(
                    f"{path!r}: its zip directory lists {compressed} bytes of members in a file of "
                    f"{size} bytes (corrupt, or a zip bomb of overlapping members)")
            yield zf, size


class _LazyStorage:
    """A storage of a PyTorch file, named and checked against its member; read on demand."""

    def __init__(self, entry: str, dtype, numel: int):
        self.entry, self.dtype, self.numel = entry, dtype, numel


class _LazyTensor:
    """A tensor's place in its storage, checked against it; built when its entry is read."""

    def __init__(self, storage: _LazyStorage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


@contextlib.contextmanager
def _torch_entries(path: str):
    """The tensors of a PyTorch zip checkpoint (nested dicts flattened with dots), each read from
    its storage when looked up."""
    not_zip = (f"{path!r} is not a PyTorch zip checkpoint (truncated, or the legacy pre-1.6 format; "
               "re-save it with torch.save in a current PyTorch)")
    with _zip_archive(path, not_zip) as (zf, size):
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise MaskFileError(f"{path!r} has no single data.pkl: not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        budget = MemoryBudget(path, size)
        charged = set()  # a member is charged once, however often a tensor of it is read

        def charge(name):
            if name not in charged:
                budget.charge(zf.getinfo(name).file_size, f"member {reprlib.repr(name)}")
                charged.add(name)

        def member(name, out=None):
            """The member's bytes, or, with ``out``, its first bytes read straight into ``out``
            (in chunks: no second copy of a storage is ever held)."""
            info = zf.getinfo(name)
            charge(name)
            try:
                if out is None:
                    return zf.read(info)
                buf = memoryview(out).cast("B")
                with zf.open(info) as fp:
                    done = 0
                    while done < len(buf):
                        chunk = fp.read(min(_READ_CHUNK, len(buf) - done))
                        if not chunk:
                            raise EOFError("the member ends early")
                        buf[done:done + len(chunk)] = chunk
                        done += len(chunk)
                    while fp.read(_READ_CHUNK):  # to its end, where the CRC is checked
                        pass
                return out
            except Exception as e:  # zlib.error, bad CRC, EOFError, ...
                raise MaskFileError(f"{path!r}: member {reprlib.repr(name)} is unreadable "
                                    f"({describe_error(e)})") from None

        little = True
        if prefix + "byteorder" in names:
            little = member(prefix + "byteorder").strip() != b"big"
        data = member(pkl[0])
        storages = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str)
                    and pid[0] == "storage" and isinstance(pid[1], _Storage)
                    and isinstance(pid[2], str) and type(pid[4]) is int and pid[4] >= 0):
                raise MaskFileError(f"{path!r}: unexpected persistent id {reprlib.repr(pid)}")
            _, kind, key, _location, numel = pid
            if key not in storages:
                dtype = _TORCH_DTYPES[kind.name]
                raw_dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
                entry = f"{prefix}data/{key}"
                if entry not in names:
                    raise MaskFileError(f"{path!r}: storage {reprlib.repr(entry)} is missing")
                held = zf.getinfo(entry).file_size
                if held < numel * raw_dtype.itemsize:
                    raise MaskFileError(
                        f"{path!r}: storage {reprlib.repr(key)} is truncated: it declares {numel} "
                        f"elements of {raw_dtype.itemsize} bytes but holds {held} bytes")
                storages[key] = _LazyStorage(entry, dtype, numel)
            return storages[key]

        def rebuild_tensor(storage, offset, size, stride, *_ignored):
            if not isinstance(storage, _LazyStorage):
                raise MaskFileError(f"{path!r}: a tensor has no storage (tampered file?)")
            size, stride = tuple(map(operator.index, size)), tuple(map(operator.index, stride))
            offset = operator.index(offset)
            if len(size) != len(stride) or not all(0 <= v < 2**63 for v in (offset, *size, *stride)):
                raise MaskFileError(f"{path!r}: tensor metadata is malformed (tampered file?)")
            raw = np.dtype(np.float32 if storage.dtype == "bfloat16" else storage.dtype)
            budget.charge(math.prod(size) * raw.itemsize, f"a tensor of shape {size}")
            if 0 not in size:
                last = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
                if last >= storage.numel:
                    raise MaskFileError(
                        f"{path!r}: tensor metadata points outside its storage (tampered file?)")
            return _LazyTensor(storage, offset, size, stride)

        allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                   ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}
        allowed.update({("torch", k): _Storage(k) for k in _TORCH_DTYPES})
        try:
            obj = restricted_loads(data, allowed, what=repr(path), persistent_load=load_storage,
                                   states={collections.OrderedDict: _check_dict_state})
        except (MaskFileError, UnsafePickleError):
            raise
        except Exception as e:  # a broken pickle can raise almost anything; report it cleanly
            raise MaskFileError(
                f"cannot read {path!r}: its pickle is corrupt ({describe_error(e)})") from None
        tensors = _flatten_tensors(obj, path, len(data))

        # tensors per storage: a shared storage is decoded once and kept while some of its
        # tensors are unread (a file cannot make the reader decode a member twice)
        refs = collections.Counter(t.storage.entry for t in tensors.values() if 0 not in t.size)
        unread, decoded = collections.Counter(refs), {}

        def storage(st):
            arr = decoded.get(st.entry)
            if arr is None:
                raw_dtype = np.dtype(np.uint16 if st.dtype == "bfloat16" else st.dtype)
                charge(st.entry)  # before allocating: the budget bounds what a file may ask for
                arr = member(st.entry, np.empty(st.numel, raw_dtype))
                if little != (sys.byteorder == "little"):
                    arr.byteswap(inplace=True)
                if st.dtype == "bfloat16":
                    arr = (arr.astype(np.uint32) << 16).view(np.float32)
            unread[st.entry] -= 1
            if unread[st.entry] > 0:
                decoded[st.entry] = arr
            else:
                decoded.pop(st.entry, None)
            return arr

        def read(key):
            t = tensors[key]
            st = t.storage
            if 0 in t.size:
                return np.zeros(t.size, dtype=np.float32 if st.dtype == "bfloat16" else st.dtype)
            arr = storage(st)
            if (refs[st.entry] == 1 and t.offset == 0 and t.stride == _c_strides(t.size)
                    and math.prod(t.size) == arr.size):
                return arr.reshape(t.size)  # its own storage, whole and in order: no copy
            return np.lib.stride_tricks.as_strided(
                arr[t.offset:], shape=t.size, strides=tuple(s * arr.itemsize for s in t.stride)
            ).copy()

        yield _ArrayFile({k: t.size for k, t in tensors.items()}, read)


def _c_strides(size: tuple) -> tuple:
    """Element strides of a C-ordered array of shape ``size``."""
    out, step = [], 1
    for n in reversed(size):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def _flatten_tensors(obj, path: str, limit: int) -> dict:
    """The arrays in nested string-keyed mappings, keyed by dotted paths.

    Refuses nesting deeper than :data:`~connsim.safepickle.MAX_DEPTH`, a mapping that contains
    itself, and more than ``limit`` entries visited in all (a mapping referred to twice is walked
    twice, so shared mappings could otherwise multiply the work exponentially).
    """
    if isinstance(obj, _LazyTensor):
        return {"": obj}
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    out: dict = {}
    visits = 0

    def walk(node, prefix, enclosing):
        nonlocal visits
        if id(node) in enclosing:
            raise MaskFileError(f"{path!r}: a dict in it contains itself (a self-referencing "
                                "pickle; corrupt or hostile)")
        if len(enclosing) >= MAX_DEPTH:
            raise MaskFileError(f"{path!r}: its dicts nest more than {MAX_DEPTH} levels deep "
                                "(corrupt or hostile)")
        enclosing = enclosing | {id(node)}
        for k, v in node.items():
            visits += 1
            if visits > limit:
                raise MaskFileError(
                    f"{path!r}: its dicts refer to one another so often that reading them would "
                    f"visit more than {limit} entries, one per byte of its pickle (corrupt or hostile)")
            if not isinstance(k, str):
                continue  # cannot name a layer (optimizer state indices, say)
            if isinstance(v, _LazyTensor):
                out[prefix + k] = v
            elif isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.", enclosing)

    if isinstance(obj, Mapping):
        walk(obj, "", frozenset())
    if not out:
        raise MaskFileError(f"{path!r} holds no tensors")
    return out


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, key: str,
                budget: MemoryBudget) -> tuple:
    """The shape of one ``.npy`` member of an ``.npz``, after checking its header against its
    size."""
    where = f"{path!r}: entry {reprlib.repr(key)}"
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise MaskFileError(f"{where} has unsupported .npy format version {version}")
        # version 3.0 differs from 2.0 only in allowing utf-8 field names, which change no size
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _fortran, dtype = read_header(fp)
        header = fp.tell()
    if dtype.hasobject:
        raise MaskFileError(f"{where} holds Python objects (a pickled array), which connsim never "
                            "loads; save numeric arrays")
    count = math.prod(shape)
    held = info.file_size - header
    if min(shape, default=0) < 0 or count * dtype.itemsize != held:
        raise MaskFileError(
            f"{where}: its header declares shape {shape} of {dtype} "
            f"({format_nbytes(max(count, 0) * dtype.itemsize)}) but it holds {held} bytes of data "
            "(corrupt or hostile)")
    if dtype.itemsize == 0:  # no bytes back the elements, but any use needs a byte per element
        budget.charge(count, f"entry {reprlib.repr(key)} ({count} elements of {dtype})")
    return tuple(shape)


def _corrupt(path: str, key: str, e: Exception) -> MaskFileError:
    # a corrupt member can fail in any layer: deflate stream (zlib.error), CRC, .npy header
    # parsing (SyntaxError, tokenize.TokenError), NumPy's reader
    return MaskFileError(f"{path!r}: entry {reprlib.repr(key)} is corrupt ({describe_error(e)})")


@contextlib.contextmanager
def _npz_entries(path: str):
    """The arrays of an ``.npz`` file in file order, keyed as :func:`numpy.load` keys them; every
    member's ``.npy`` header is checked against the member's size on opening, its data read when
    looked up."""
    not_npz = f"cannot read {path!r} as .npz (truncated or not an npz?)"
    with _zip_archive(path, not_npz) as (zf, size):
        budget = MemoryBudget(path, size)
        infos, shapes = {}, {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise MaskFileError(f"{path!r}: member {reprlib.repr(info.filename)} is not a .npy "
                                    "array; this is not an .npz written by NumPy")
            key = info.filename[: -len(".npy")]
            if key in infos:
                raise MaskFileError(f"{path!r} holds entry {reprlib.repr(key)} twice")
            try:
                shapes[key] = _npy_header(zf, info, path, key, budget)
            except MaskFileError:
                raise
            except Exception as e:
                raise _corrupt(path, key, e) from None
            infos[key] = info

        def read(key):
            try:
                with zf.open(infos[key]) as fp:
                    return np.lib.format.read_array(fp, allow_pickle=False)
            except Exception as e:
                raise _corrupt(path, key, e) from None

        yield _ArrayFile(shapes, read)


def read_npz(path: str) -> dict:
    """Arrays of an ``.npz`` file, in file order, keyed as :func:`numpy.load` keys them.

    Each member's ``.npy`` header is checked against the member's size before its data is read
    (see the module docstring).
    """
    with _npz_entries(path) as arrays:
        return dict(arrays.items())


@contextlib.contextmanager
def _safetensors_entries(path: str):
    """The arrays of a ``.safetensors`` file in natural key order (needs the ``safetensors``
    package), each read when looked up."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError(
            "reading .safetensors needs the 'safetensors' package: pip install 'connsim[io]'"
        ) from None

    def failed(e):  # safetensors raises its own error types
        return MaskFileError(f"cannot read {path!r} as safetensors: {describe_error(e)}")

    try:
        handle = safe_open(path, framework="np")
    except Exception as e:
        raise failed(e) from None
    with handle:
        try:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except Exception as e:
            raise failed(e) from None

        def read(key):
            try:
                return handle.get_tensor(key)
            except Exception as e:
                raise failed(e) from None

        yield _ArrayFile(_natural_order(shapes), read)


class _ArrayFile(Mapping):
    """The arrays of an open mask file by key, each read (and checked) when it is looked up, so
    that a reader converting entry by entry holds one raw entry at a time. ``shapes`` maps every
    key to its shape without reading any data."""

    def __init__(self, shapes: dict, read):
        self.shapes, self._read = shapes, read

    def __getitem__(self, key):
        if key not in self.shapes:
            raise KeyError(key)
        return self._read(key)

    def __contains__(self, key):
        return key in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)


@contextlib.contextmanager
def _open_arrays(path: str | os.PathLike):
    """The file's arrays as an :class:`_ArrayFile`, valid inside the ``with`` block."""
    path = os.fspath(path)
    kinds = ".npz, .safetensors, .pt or .pth"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"mask file {path!r} does not exist") from None
    except OSError as e:
        raise MaskFileError(f"cannot read mask file {path!r}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise MaskFileError(f"{path!r} is a directory; a mask file ({kinds}) is expected")
    if not stat.S_ISREG(mode):
        raise MaskFileError(f"{path!r} is not a regular file; a mask file ({kinds}) is expected")
    if path.endswith(".npz"):
        entries = _npz_entries(path)
    elif path.endswith(".safetensors"):
        entries = _safetensors_entries(path)
    elif path.endswith((".pt", ".pth", ".bin", ".ckpt")):
        entries = _torch_entries(path)
    else:
        raise MaskFileError(f"unknown mask file type {path!r}: use {kinds}")
    with entries as arrays:
        yield arrays


def read_arrays(path: str | os.PathLike) -> dict:
    """All arrays of a mask file, in file order, keyed as in the file.

    Parameters
    ----------
    path : str or path-like
        A ``.npz``, ``.safetensors`` (needs the ``io`` extra) or PyTorch ``.pt``/``.pth``/``.bin``/
        ``.ckpt`` file; PyTorch files are read without torch, through a restricted unpickler.

    Returns
    -------
    dict of str to ndarray
        The file's arrays; safetensors keys in natural order (``layer.9`` before ``layer.10``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    MaskFileError
        If it is a directory, of an unknown type, truncated, corrupt or refers to code.

    See Also
    --------
    load_masks : Matches the arrays to an architecture's layers.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(path, b=np.zeros(2), a=np.ones((2, 2)))
    >>> {k: v.shape for k, v in read_arrays(path).items()}
    {'b': (2,), 'a': (2, 2)}
    """
    with _open_arrays(path) as arrays:
        return dict(arrays.items())


def _natural_order(arrays: dict) -> dict:
    """safetensors stores no order; sort keys so that 'layer.10' follows 'layer.9'."""
    def key(k):  # a run of digits compares by value: by length without leading zeros, then as text
        return [(len(t.lstrip("0")), t.lstrip("0")) if i % 2 else t
                for i, t in enumerate(re.split(r"(\d+)", k))]
    return {k: arrays[k] for k in sorted(arrays, key=key)}


# ------------------------------------------------------------------------- matching

_SUFFIXES = (".weight_mask", "_mask", ".weight_orig", "_orig", ".weight")


def _base(key: str) -> tuple[str, int]:
    """Layer name of a key and its priority (0 = mask, 1 = weight)."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], 0 if "mask" in suffix else 1
    return key, 1


def match_arrays(arch: Architecture, arrays: Mapping, *, layout: str = "torch",
                 source: str = "file", prefer_masks: bool = True) -> dict:
    """Layer name -> ``(key, is_mask)`` of the file entry that holds that layer: by name when
    every layer is found, else by order and shape of the file's 2-D/4-D arrays (no array is read
    when ``arrays`` is an open file)."""
    shapes = (arrays.shapes if isinstance(arrays, _ArrayFile)
              else {k: np.shape(v) for k, v in arrays.items()})
    entries: dict[str, tuple[int, str]] = {}
    for key, shape in shapes.items():
        if len(shape) not in (2, 4):
            continue  # biases, BatchNorm statistics, counters
        base, prio = _base(key)
        prio = prio if prefer_masks else 1 - prio
        if base not in entries or prio < entries[base][0]:
            entries[base] = (prio, key)
    names = arch.layer_names
    if all(n in entries for n in names):
        chosen = {n: entries[n] for n in names}
    else:
        found = list(entries.items())
        found_shapes = [from_layout(np.broadcast_to(False, shapes[k]), layout).shape
                        for _, (_, k) in found]
        expected = [arch.weight_shape(n) for n in names]
        if found_shapes != expected:
            raise MaskFileError(
                f"{source} does not fit architecture {arch.name!r}: not all layer names match and "
                f"the shapes differ in order.\n  expected: "
                + ", ".join(f"{n} {s}" for n, s in zip(names, expected, strict=True))
                + "\n  found:    "
                + (", ".join(f"{k} {s}" for (_, (_, k)), s in zip(found, found_shapes, strict=True))
                   or "no 2-D or 4-D arrays")
                + ("\n  (layout is 'torch'; pass layout='keras' for (in, out) files)"
                   if layout == "torch" else "")
            )
        chosen = {n: e for n, (_, e) in zip(names, found, strict=True)}
    return {n: (key, (prio == 0) == prefer_masks) for n, (prio, key) in chosen.items()}


def _check_real(a: np.ndarray, where: str, what: str) -> None:
    if a.dtype.kind not in "biuf":
        raise MaskFileError(f"{where} has dtype {a.dtype}; {what} must be boolean or real numbers")


def _entry_mask(a, is_mask: bool, where: str) -> np.ndarray:
    """One entry as a boolean mask: checked as a mask, or ``weight != 0`` (a raw entry lives
    only while this runs)."""
    a = np.asarray(a)
    _check_real(a, where, "masks" if is_mask else "weights")
    if a.dtype == bool and a.size and a.view(np.uint8).max() > 1:
        a = a.view(np.uint8) != 0  # a file's booleans may hold any byte; the kernels read 0/1
    with np.errstate(invalid="ignore"):  # arbitrary long-double bytes may be no number at all
        if is_mask:
            try:
                return check_mask(a, where)
            except ValueError as e:
                raise MaskFileError(str(e)) from None
        if a.dtype.kind == "f" and a.size and np.isnan(a.min()):  # min propagates NaN
            raise MaskFileError(f"{where}: weights contain NaN")
        return a if a.dtype == bool else a != 0


def masks_from_arrays(arch: Architecture, arrays: Mapping, *, layout: str = "torch",
                      source: str = "mask file") -> dict:
    """Map a file's arrays onto the architecture's layers and return canonical masks; an open
    file's entries are read one at a time, each dropped once converted."""
    out = {}
    for layer, (key, is_mask) in match_arrays(arch, arrays, layout=layout, source=source).items():
        where = f"{source}: entry {reprlib.repr(key)} (layer {layer!r})"
        out[layer] = from_layout(_entry_mask(arrays[key], is_mask, where), layout)
    try:
        return check_masks(arch, out)
    except ValueError as e:
        raise MaskFileError(f"{source}: {e}") from None


def load_weights(path: str | os.PathLike, arch: Architecture, *, layout: str = "torch"):
    """Prunable weights (PyTorch layout) from a weights file, and the whole file as a network state.

    Parameters
    ----------
    path : str or path-like
        A ``.npz``, ``.safetensors`` or PyTorch file, matched to the layers as :func:`load_masks`
        matches masks.
    arch : Architecture
        The network the weights belong to.
    layout : {'torch', 'keras'}
        Layout of the arrays in the file.

    Returns
    -------
    weights : dict of str to ndarray
        One float64 array per prunable layer, in PyTorch layout.
    state : dict of str to ndarray
        Every array of the file when it is a network state as ``connsim train`` writes it
        (``weights.npz``: a ``NAME.weight`` entry for every layer, with biases and BatchNorm
        statistics), else empty.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    MaskFileError
        If it cannot be read, holds masks instead of weights, NaN or infinite weights, or does not
        fit ``arch``.

    See Also
    --------
    load_masks : The masks of a file.
    connsim.trainer.train : Writes ``weights.npz``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-3-2")
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> np.savez(path, **{"fc1.weight": np.ones((3, 4)), "fc2.weight": np.ones((2, 3))})
    >>> weights, state = load_weights(path, arch)
    >>> weights["fc2"].shape, sorted(state)
    ((2, 3), ['fc1.weight', 'fc2.weight'])
    """
    path = os.fspath(path)
    arrays = read_arrays(path)
    matched = match_arrays(arch, arrays, layout=layout, source=repr(path), prefer_masks=False)
    weights = {}
    for layer, (key, is_mask) in matched.items():
        where = f"{path!r}: entry {reprlib.repr(key)} (layer {layer!r})"
        if is_mask:
            raise MaskFileError(f"{where} is a mask, not weights")
        a = np.asarray(arrays[key])
        _check_real(a, where, "weights")
        with np.errstate(invalid="ignore", over="ignore"):  # what does not fit is refused below
            w = from_layout(np.asarray(a, dtype=np.float64), layout)
        if not np.isfinite(w).all():
            raise MaskFileError(f"{path!r}: weights of layer {layer!r} contain NaN or infinity")
        if w.shape != arch.weight_shape(layer):
            raise MaskFileError(f"{where} has shape {w.shape} in PyTorch layout; expected "
                                f"{arch.weight_shape(layer)}")
        weights[layer] = w
    is_state = all(f"{n}.weight" in arrays for n in arch.layer_names)
    return weights, (dict(arrays) if is_state else {})


def load_masks(path: str | os.PathLike, arch: Architecture, *, layout: str = "torch") -> dict:
    """Read masks for ``arch`` from ``.npz``, ``.safetensors`` or a PyTorch ``.pt``/``.pth`` file.

    Parameters
    ----------
    path : path-like
    arch : Architecture
    layout : {'torch', 'keras'}
        Layout of the arrays in the file.

    Returns
    -------
    dict of str to ndarray of bool
        Canonical masks (PyTorch layout).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    MaskFileError
        If the file is truncated, tampered with, refers to code, or does not fit ``arch``
        (the message lists expected and found shapes).

    See Also
    --------
    save_masks : Writes a masks file.
    connsim.measures.measure : Direct and effective density of the masks.

    Examples
    --------
    >>> import os, tempfile
    >>> from connsim import get_arch, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> save_masks(path, ones_masks(arch))
    >>> sorted(load_masks(path, arch))
    ['fc1', 'fc2']
    """
    path = os.fspath(path)
    with _open_arrays(path) as arrays:
        return masks_from_arrays(arch, arrays, layout=layout, source=repr(path))


def save_masks(path: str | os.PathLike, masks: Mapping, *, layout: str = "torch",
               extra: Mapping | None = None) -> None:
    """Write masks keyed by layer name to ``.npz`` (compressed) or ``.safetensors``, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write; its suffix chooses the format.
    masks : mapping of str to array_like
        One binary array per layer, in PyTorch layout.
    layout : {'torch', 'keras'}
        Layout to write the arrays in.
    extra : mapping of str to array_like, optional
        Further named arrays (e.g. weights) to write next to the masks.

    Raises
    ------
    ValueError
        For another suffix, or ``extra`` names that clash with mask names.
    ImportError
        For ``.safetensors`` without the ``safetensors`` package (the ``io`` extra).

    See Also
    --------
    load_masks : Reads the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> from connsim import get_arch, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> path = os.path.join(tempfile.mkdtemp(), "dense.npz")
    >>> save_masks(path, ones_masks(arch))
    >>> int(load_masks(path, arch)["fc1"].sum())
    12
    """
    path = os.fspath(path)
    arrays = {k: np.ascontiguousarray(to_layout(np.asarray(v, dtype=bool), layout))
              for k, v in masks.items()}
    if extra:
        clash = set(arrays) & set(extra)
        if clash:
            raise ValueError(f"extra arrays reuse mask names {sorted(clash)}")
        arrays.update({k: np.asarray(v) for k, v in extra.items()})
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import save_file
        except ImportError:
            raise ImportError(
                "writing .safetensors needs the 'safetensors' package: pip install 'connsim[io]'"
            ) from None
        with atomic_write(path, ".safetensors") as tmp:
            save_file(arrays, tmp)
    elif path.endswith(".npz"):
        write_npz(path, arrays)
    else:
        raise ValueError(f"mask files are written as .npz or .safetensors, got {path!r}")



def write_npz(path: str | os.PathLike, arrays: Mapping) -> None:
    """Write named arrays to a compressed ``.npz``, atomically."""
    path = os.fspath(path)
    with atomic_write(path, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
