"""Reading and writing masks: ``.npz``, safetensors, and PyTorch ``.pt``/``.pth`` without torch.

Files hold one array per prunable layer. A file's keys are mapped to the architecture's layers by
name (``fc1``, ``fc1.weight``, ``fc1.weight_mask`` all name layer ``fc1``), else by order and shape of
its 2-D/4-D arrays. For each layer a ``*_mask`` entry is used when present (what
``torch.nn.utils.prune`` saves); otherwise the mask is inferred as ``weight != 0`` (or
``weight_orig != 0``).

PyTorch files are read from their zip archive through a restricted unpickler that admits only the
tensor-rebuild function, the storage type names and ``OrderedDict``; anything else (a pickled
module, a call to ``os.system``) is refused. The legacy pre-1.6 non-zip format is not supported.
Writes are atomic: a temporary file in the target folder is renamed over the target.
"""

from __future__ import annotations

import collections
import os
import re
import zipfile
from collections.abc import Mapping

import numpy as np

from .architectures import Architecture
from .files import atomic_write
from .masks import as_mask, check_masks, from_layout, to_layout
from .safepickle import UnsafePickleError, restricted_loads

_TORCH_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class MaskFileError(ValueError):
    """A mask file is missing, truncated, tampered with, or does not fit the architecture."""


# ------------------------------------------------------------------------- readers


class _Storage:
    """Stand-in for a torch storage class: carries only the element dtype."""

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    size, stride, offset = tuple(map(int, size)), tuple(map(int, stride)), int(offset)
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise MaskFileError("tensor metadata is malformed (tampered file?)")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
    if last >= storage.size:
        raise MaskFileError("tensor metadata points outside its storage (tampered file?)")
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride)
    ).copy()


def _rebuild_parameter(data, *_ignored):
    return data


def read_torch(path: str) -> dict:
    """Tensors of a PyTorch zip checkpoint as NumPy arrays (nested dicts flattened with dots)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise MaskFileError(
            f"{path!r} is not a PyTorch zip checkpoint (truncated, or the legacy pre-1.6 format; "
            "re-save it with torch.save in a current PyTorch)"
        ) from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise MaskFileError(f"{path!r} has no single data.pkl: not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = zf.read(prefix + "byteorder").strip() != b"big"
        storages = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                    and isinstance(pid[1], _Storage)):
                raise MaskFileError(f"{path!r}: unexpected persistent id {pid!r}")
            _, kind, key, _location, numel = pid
            if key not in storages:
                dtype = _TORCH_DTYPES[kind.name]
                raw_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
                entry = f"{prefix}data/{key}"
                try:
                    raw = zf.read(entry)
                except (KeyError, zipfile.BadZipFile, OSError) as e:
                    raise MaskFileError(f"{path!r}: storage {entry!r} unreadable ({e})") from None
                itemsize = np.dtype(raw_dtype).itemsize
                if len(raw) < numel * itemsize:
                    raise MaskFileError(f"{path!r}: storage {key!r} is truncated")
                arr = np.frombuffer(raw, dtype=np.dtype(raw_dtype).newbyteorder(
                    "<" if little else ">"), count=numel).astype(raw_dtype)
                if dtype == "bfloat16":
                    arr = (arr.astype(np.uint32) << 16).view(np.float32)
                storages[key] = arr
            return storages[key]

        allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                   ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}
        allowed.update({("torch", k): _Storage(k) for k in _TORCH_DTYPES})
        try:
            obj = restricted_loads(zf.read(pkl[0]), allowed, what=repr(path),
                                   persistent_load=load_storage)
        except (MaskFileError, UnsafePickleError):
            raise
        except Exception as e:  # a broken pickle can raise almost anything; report it cleanly
            raise MaskFileError(f"cannot read {path!r}: {e}") from None
    return _flatten_tensors(obj, path)


def _flatten_tensors(obj, path, prefix="") -> dict:
    if isinstance(obj, np.ndarray):
        return {prefix.rstrip("."): obj}
    if not isinstance(obj, Mapping):
        return {}
    if prefix == "":
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return _flatten_tensors(obj[key], path)
    out = {}
    for k, v in obj.items():
        out.update(_flatten_tensors(v, path, f"{prefix}{k}."))
    if prefix == "" and not out:
        raise MaskFileError(f"{path!r} holds no tensors")
    return out


def read_npz(path: str) -> dict:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise MaskFileError(f"cannot read {path!r} as .npz (truncated or not an npz?): {e}") from None


def read_safetensors(path: str) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            "reading .safetensors needs the 'safetensors' package: pip install 'connsim[io]'"
        ) from None
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise MaskFileError(f"cannot read {path!r} as safetensors: {e}") from None


def read_arrays(path: str | os.PathLike) -> dict:
    """All arrays of a mask file, in file order, keyed as in the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file {path!r} does not exist")
    if path.endswith(".npz"):
        return read_npz(path)
    if path.endswith(".safetensors"):
        return _natural_order(read_safetensors(path))
    if path.endswith((".pt", ".pth", ".bin", ".ckpt")):
        return read_torch(path)
    raise MaskFileError(
        f"unknown mask file type {path!r}: use .npz, .safetensors, .pt or .pth"
    )


def _natural_order(arrays: dict) -> dict:
    """safetensors stores no order; sort keys so that 'layer.10' follows 'layer.9'."""
    def key(k):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)]
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
    every layer is found, else by order and shape of the file's 2-D/4-D arrays."""
    entries: dict[str, tuple[int, str]] = {}
    for key, value in arrays.items():
        if np.ndim(value) not in (2, 4):
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
        shapes = [from_layout(np.empty(np.shape(arrays[k]), bool), layout).shape
                  for _, (_, k) in found]
        expected = [arch.weight_shape(n) for n in names]
        if shapes != expected:
            raise MaskFileError(
                f"{source} does not fit architecture {arch.name!r}: not all layer names match and "
                f"the shapes differ in order.\n  expected: "
                + ", ".join(f"{n} {s}" for n, s in zip(names, expected, strict=True))
                + "\n  found:    "
                + (", ".join(f"{k} {s}" for (_, (_, k)), s in zip(found, shapes, strict=True))
                   or "no 2-D or 4-D arrays")
                + ("\n  (layout is 'torch'; pass layout='keras' for (in, out) files)"
                   if layout == "torch" else "")
            )
        chosen = {n: e for n, (_, e) in zip(names, found, strict=True)}
    return {n: (key, (prio == 0) == prefer_masks) for n, (prio, key) in chosen.items()}


def masks_from_arrays(arch: Architecture, arrays: Mapping, *, layout: str = "torch",
                      source: str = "mask file") -> dict:
    """Map a file's arrays onto the architecture's layers and return canonical masks."""
    out = {}
    for layer, (key, is_mask) in match_arrays(arch, arrays, layout=layout, source=source).items():
        a = np.asarray(arrays[key])
        where = f"{source}: entry {key!r} (layer {layer!r})"
        if is_mask:
            out[layer] = from_layout(as_mask(a, where), layout)
            continue
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise MaskFileError(f"{where}: weights contain NaN")
        out[layer] = from_layout(a != 0, layout)
    return check_masks(arch, out)


def load_weights(path: str | os.PathLike, arch: Architecture, *, layout: str = "torch"):
    """Prunable weights (PyTorch layout) from a weights file, and the whole file as a network
    state when it is one written by ``connsim train`` (``weights.npz``)."""
    path = os.fspath(path)
    arrays = read_arrays(path)
    matched = match_arrays(arch, arrays, layout=layout, source=repr(path), prefer_masks=False)
    weights = {}
    for layer, (key, is_mask) in matched.items():
        if is_mask:
            raise MaskFileError(f"{path!r}: entry {key!r} is a mask, not weights")
        w = np.asarray(arrays[key], dtype=np.float64)
        if np.isnan(w).any():
            raise MaskFileError(f"{path!r}: weights of layer {layer!r} contain NaN")
        weights[layer] = from_layout(w, layout)
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
    return masks_from_arrays(arch, read_arrays(path), layout=layout, source=repr(path))


def save_masks(path: str | os.PathLike, masks: Mapping, *, layout: str = "torch",
               extra: Mapping | None = None) -> None:
    """Write masks keyed by layer name to ``.npz`` (compressed) or ``.safetensors``, atomically.

    ``extra`` adds further named arrays (e.g. weights) to an ``.npz``.
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
        with atomic_write(path, ".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
    else:
        raise ValueError(f"mask files are written as .npz or .safetensors, got {path!r}")
