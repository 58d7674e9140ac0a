"""Fuzzing every file reader with random bytes and with mutations of valid files.

Each reader must either load a file or fail with one of connsim's own errors, within
:data:`SECONDS` and with traced allocations below :data:`PEAK`. Mutations are lists of
``(kind, position, value)`` operations applied to a valid file, so that a counterexample can be
pinned with ``@example`` whatever the file's exact bytes (zip timestamps change them).
"""

import contextlib
import functools
import gzip
import io
import json
import os
import pickle
import signal
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connsim import get_arch
from connsim.architectures import SpecError, load_arch
from connsim.maskio import MaskFileError, load_masks, load_weights, read_arrays
from connsim.safepickle import UnsafePickleError
from connsim.trainer.data import DataError, _load_npz, _read_idx, _unpickle_batch

DATA = os.path.join(os.path.dirname(__file__), "data")
SECONDS = 10
PEAK = 256 * 2**20
CLEAN = (MaskFileError, DataError, SpecError, UnsafePickleError)
MLP = get_arch("mlp:6-5-4-3")
TORCH = {"mlp": ("mlp_prune_api.pt", MLP), "lenet": ("lenet5_ckpt.pth", get_arch("lenet-5"))}

OPS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete", "int32"]),
                         st.integers(0, 2**20), st.integers(0, 2**32 - 1)),
               min_size=1, max_size=4)
FUZZ = settings(deadline=None, max_examples=150)


def mutate(base: bytes, ops) -> bytes:
    """Apply ``(kind, position, value)`` operations; positions wrap around the data's length."""
    data = bytearray(base)
    for kind, pos, value in ops:
        pos %= len(data) + 1
        if kind == "flip" and pos < len(data):
            data[pos] ^= value % 255 + 1
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = value.to_bytes(4, "little")[: value % 4 + 1]
        elif kind == "delete":
            del data[pos:pos + value % 16 + 1]
        elif kind == "int32":  # sizes, counts and offsets are where extreme values hurt
            data[pos:pos + 4] = value.to_bytes(4, "little")
    return bytes(data)


class _Overtime(BaseException):
    """Not an Exception, so that no reader's error handling can swallow it."""


@contextlib.contextmanager
def bounded():
    """Fail when the block runs longer than SECONDS or its traced allocations peak above PEAK."""
    def overtime(signum, frame):
        raise _Overtime(f"reader still running after {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, overtime)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < SECONDS
    assert peak < PEAK, f"reader allocated {peak / 2**20:.0f} MiB"


def check(read, path, *args):
    """``read(path, *args)`` returns or raises a clean connsim error, within bounds."""
    with bounded():
        try:
            read(path, *args)
        except CLEAN:
            pass


def check_mask_readers(path, arch=MLP):
    for read, args in ((read_arrays, ()), (load_masks, (arch,)), (load_weights, (arch,))):
        check(read, path, *args)


def written(folder, name, raw: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(raw)
    return path


# ------------------------------------------------------------------------- valid files


@functools.cache
def npz_file(compressed: bool) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {"fc1.weight": rng.normal(size=(5, 6)).astype(np.float32),
              "fc1.weight_mask": rng.random((5, 6)) < 0.5,
              "fc2.weight": rng.normal(size=(4, 5)).astype(np.float32),
              "fc3.weight": rng.normal(size=(3, 4)).astype(np.float32),
              "fc3.bias": np.zeros(3, np.float32)}
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


@functools.cache
def safetensors_file() -> bytes:
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        save_file({"fc1.weight": np.ones((5, 6), np.float32), "fc2.weight": np.eye(4, 5),
                   "fc3.weight": np.zeros((3, 4), np.int8)}, path)
        with open(path, "rb") as f:
            return f.read()


@functools.cache
def torch_file(name: str) -> bytes:
    with open(os.path.join(DATA, TORCH[name][0]), "rb") as f:
        return f.read()


@functools.cache
def torch_members(name: str) -> tuple[str, dict]:
    """The name of the data.pkl member and every member's bytes."""
    with zipfile.ZipFile(io.BytesIO(torch_file(name))) as z:
        members = {n: z.read(n) for n in z.namelist()}
    return next(n for n in members if n.endswith("data.pkl")), members


def rezipped(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for n, raw in members.items():
            z.writestr(n, raw)
    return buf.getvalue()


SPECS = {
    ".json": json.dumps(get_arch("lenet-5").to_dict()).encode(),
    ".toml": (b'name = "t"\ninput = [1, 8, 8]\n[[layers]]\nname = "c"\ntype = "conv"\nout = 2\n'
              b'kernel = [3, 3]\npadding = "same"\n[[layers]]\ntype = "pool"\nmode = "avg"\n'
              b'kernel = 2\n[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nout = 3\n'),
}
IDX = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (3, 4, 4)) + bytes(range(48))
CIFAR = pickle.dumps({b"batch_label": b"x", b"labels": [1, 2],
                      b"data": np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)}, protocol=2)
# the dtype state (3, '|', None, None, None, -1, -1, 0) with its second None made a POP: NumPy's
# dtype.__setstate__ crashed the interpreter on what followed
DTYPE_STATE_CRASH = [("flip", CIFAR.index(b"NNNJ") + 1, (ord("N") ^ ord("0")) - 1)]


@functools.cache
def dataset_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=np.zeros((2, 784), np.float32), y_train=np.array([1, 2]),
                        x_test=np.ones((1, 784), np.float32), y_test=np.array([3]))
    return buf.getvalue()


# Hostile pickles found while hardening the readers (each escaped or crashed before).
SELF_REFERENCE = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."
DEEP_DICTS = b"\x80\x02" + b"}X\x01\x00\x00\x00a" * 100_000 + b"}" + b"s" * 100_000 + b"."
DEEP_TUPLE_KEY = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s."  # hash() overflowed the C stack
HUGE_MEMO_INDEX = b"\x80\x02}r\x00\x00\x00\x10."  # the C unpickler allocated a 4 GiB memo
# a (5, 6) tensor with strides (6, 1) made (30000, 30000) with strides (0, 0): 3.4 GiB of copies
ZERO_STRIDE = (b"K\x05K\x06\x86q\x11K\x06K\x01\x86", b"M0uM0u\x86q\x11K\x00K\x00\x86")
CALLS_NDARRAY = b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R."


# ------------------------------------------------------------------------- tests


@FUZZ
@given(raw=st.binary(max_size=4096),
       suffix=st.sampled_from([".npz", ".safetensors", ".pt", ".toml", ".json", ".idx", ".gz",
                               ".batch"]))
@example(raw=b"PK\x05\x06" + bytes(18), suffix=".npz")  # an empty zip: no arrays at all
@example(raw=b"[" * 100_000, suffix=".json")
@example(raw=b"[1, 2]", suffix=".json")
@example(raw=CALLS_NDARRAY, suffix=".batch")
@example(raw=DEEP_TUPLE_KEY, suffix=".batch")
def test_random_bytes(raw, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = written(tmp, "f" + suffix, raw)
        if suffix in (".npz", ".safetensors", ".pt"):
            check_mask_readers(path)
        if suffix == ".npz":
            check(_load_npz, path, "MNIST file")
        if suffix in (".toml", ".json"):
            check(load_arch, path)
        if suffix in (".idx", ".gz"):
            check(_read_idx, path)
        if suffix == ".batch":
            check(_unpickle_batch, path)


@FUZZ
@given(compressed=st.booleans(), ops=OPS)
@example(compressed=True, ops=[("flip", 28, 0)])  # zlib.error from a corrupt deflate stream
@example(compressed=True, ops=[("flip", 956, 127)])  # NotImplementedError: zip version 17.3
@example(compressed=True, ops=[("flip", 958, 0)])  # RuntimeError: member marked as encrypted
def test_mutated_npz(compressed, ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = written(tmp, "m.npz", mutate(npz_file(compressed), ops))
        check_mask_readers(path)


@FUZZ
@given(compressed=st.booleans(), member=st.integers(0, 4), ops=OPS)
def test_mutated_npy_member(compressed, member, ops):
    """Mutations inside one .npy member, re-zipped with a valid CRC: the header parser's turn."""
    with zipfile.ZipFile(io.BytesIO(npz_file(compressed))) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = sorted(members)[member]
    members[name] = mutate(members[name], ops)
    raw = rezipped(members, zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
    with tempfile.TemporaryDirectory() as tmp:
        check_mask_readers(written(tmp, "m.npz", raw))


@FUZZ
@given(ops=OPS)
def test_mutated_safetensors(ops):
    with tempfile.TemporaryDirectory() as tmp:
        check_mask_readers(written(tmp, "m.safetensors", mutate(safetensors_file(), ops)))


@FUZZ
@given(name=st.sampled_from(sorted(TORCH)), ops=OPS)
def test_mutated_torch_file(name, ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = written(tmp, TORCH[name][0], mutate(torch_file(name), ops))
        check_mask_readers(path, TORCH[name][1])


@FUZZ
@given(name=st.sampled_from(sorted(TORCH)), ops=OPS, pkl=st.none())
@example(name="mlp", ops=[], pkl=SELF_REFERENCE)
@example(name="mlp", ops=[], pkl=DEEP_DICTS)
@example(name="mlp", ops=[], pkl=DEEP_TUPLE_KEY)
@example(name="mlp", ops=[], pkl=HUGE_MEMO_INDEX)
@example(name="mlp", ops=[], pkl=ZERO_STRIDE)
def test_mutated_torch_pickle(name, ops, pkl):
    """Mutations of the pickle inside a checkpoint, re-zipped with a valid CRC (``pkl``, when
    given, replaces the pickle: a hostile one, or (old, new) for a substitution in it)."""
    pkl_name, members = torch_members(name)
    members = dict(members)
    if isinstance(pkl, tuple):
        assert pkl[0] in members[pkl_name]
        members[pkl_name] = members[pkl_name].replace(*pkl, 1)
    else:
        members[pkl_name] = mutate(members[pkl_name], ops) if pkl is None else pkl
    with tempfile.TemporaryDirectory() as tmp:
        path = written(tmp, TORCH[name][0], rezipped(members))
        check_mask_readers(path, TORCH[name][1])


@FUZZ
@given(suffix=st.sampled_from(sorted(SPECS)), ops=OPS)
def test_mutated_spec(suffix, ops):
    with tempfile.TemporaryDirectory() as tmp:
        check(load_arch, written(tmp, "spec" + suffix, mutate(SPECS[suffix], ops)))


@FUZZ
@given(kind=st.sampled_from(["idx", "idx.gz", "npz", "batch"]), ops=OPS)
@example(kind="idx", ops=[("int32", 4, 2**32 - 1)])
@example(kind="idx.gz", ops=[("int32", 4, 2**32 - 1)])  # 2^32 - 1 images declared
@example(kind="batch", ops=DTYPE_STATE_CRASH)
def test_mutated_data_files(kind, ops):
    base = {"idx": IDX, "idx.gz": IDX, "npz": dataset_npz(), "batch": CIFAR}[kind]
    raw = mutate(base, ops)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "idx.gz":  # mutate what gzip holds and, in turn, gzip's own bytes
            check(_read_idx, written(tmp, "f.gz", gzip.compress(raw, mtime=0)))
            check(_read_idx, written(tmp, "g.gz", mutate(gzip.compress(base, mtime=0), ops)))
        elif kind == "idx":
            check(_read_idx, written(tmp, "f", raw))
        elif kind == "npz":
            check(_load_npz, written(tmp, "d.npz", raw), "MNIST file")
        else:
            check(_unpickle_batch, written(tmp, "data_batch_1", raw))
