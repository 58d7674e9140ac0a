import io
import os
import pickle
import re
import struct
import time
import zipfile

import numpy as np
import pytest

from connsim import get_arch, measure, ones_masks
from connsim.maskio import (
    MaskFileError,
    load_masks,
    load_weights,
    masks_from_arrays,
    read_arrays,
    save_masks,
)
from connsim.masks import to_layout
from connsim.safepickle import UnsafePickleError
from tests.conftest import peak_memory
from tests.strategies import random_masks


def assert_masks_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("layout", ["torch", "keras"])
def test_roundtrip(tmp_path, suffix, layout):
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.2, 0)
    path = tmp_path / f"m{suffix}"
    save_masks(path, masks, layout=layout)
    assert_masks_equal(load_masks(path, arch, layout=layout), masks)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_torch_prune_api_file(data_dir):
    arch = get_arch("mlp:6-5-4-3")
    got = load_masks(os.path.join(data_dir, "mlp_prune_api.pt"), arch)
    with np.load(os.path.join(data_dir, "mlp_prune_api_expected.npz")) as f:
        assert_masks_equal(got, {k: f[k] for k in f.files})


def test_torch_checkpoint_with_weights_inferred(data_dir):
    arch = get_arch("lenet-5")
    got = load_masks(os.path.join(data_dir, "lenet5_ckpt.pth"), arch)
    with np.load(os.path.join(data_dir, "lenet5_ckpt_expected.npz")) as f:
        assert_masks_equal(got, {k: f[k] for k in f.files})


def test_mapping_by_name_with_suffixes_beats_order():
    arch = get_arch("mlp:4-4-4")
    a, b = np.eye(4, dtype=bool), np.ones((4, 4), bool)
    # names given in reverse order with torch suffixes; mask entries win over weights
    arrays = {"fc2.weight": np.zeros((4, 4)), "fc2.weight_mask": b.astype(np.float32),
              "fc1.weight": a * 0.3, "fc1.bias": np.ones(4)}
    got = masks_from_arrays(arch, arrays)
    np.testing.assert_array_equal(got["fc1"], a)
    np.testing.assert_array_equal(got["fc2"], b)


def test_mismatch_lists_expected_and_found():
    arch = get_arch("lenet-5")
    with pytest.raises(MaskFileError, match=r"(?s)expected: conv1 \(6, 3, 5, 5\).*found:    w \(3, 3\)"):
        masks_from_arrays(arch, {"w": np.ones((3, 3))})


def test_nan_weights_rejected():
    arch = get_arch("mlp:2-2")
    with pytest.raises(MaskFileError, match="NaN"):
        masks_from_arrays(arch, {"fc1.weight": np.full((2, 2), np.nan)})


def test_truncated_files_fail_cleanly(tmp_path, data_dir):
    arch = get_arch("lenet-5")
    path = tmp_path / "m.npz"
    save_masks(path, ones_masks(arch))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MaskFileError, match="truncated"):
        load_masks(path, arch)
    with open(os.path.join(data_dir, "lenet5_ckpt.pth"), "rb") as f:
        src = f.read()
    pt = tmp_path / "m.pth"
    pt.write_bytes(src[: len(src) // 2])
    with pytest.raises(MaskFileError):
        load_masks(pt, arch)
    with pytest.raises(FileNotFoundError):
        load_masks(tmp_path / "missing.npz", arch)
    other = tmp_path / "m.txt"
    other.write_text("x")
    with pytest.raises(MaskFileError, match="unknown mask file type"):
        load_masks(other, arch)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _torch_like_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    _torch_like_zip(path, pickle.dumps({"fc1.weight": _Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        load_masks(path, get_arch("mlp:2-2"))
    assert not (tmp_path / "pwned.txt").exists()
    _torch_like_zip(path, pickle.dumps({"fc1.weight": eval}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        load_masks(path, get_arch("mlp:2-2"))


def test_tampered_tensor_metadata(tmp_path, data_dir):
    # a pickle that asks for a view beyond its storage
    path = tmp_path / "tampered.pt"
    with zipfile.ZipFile(os.path.join(data_dir, "mlp_prune_api.pt")) as src, \
            zipfile.ZipFile(path, "w") as z:
        names = src.namelist()
        pkl_name = next(n for n in names if n.endswith("data.pkl"))
        pkl = src.read(pkl_name)
        bad = pkl.replace(b"K\x05K\x06\x86", b"K\x50K\x06\x86", 1)  # size (5, 6) -> (80, 6)
        assert bad != pkl
        for n in names:
            z.writestr(n, bad if n == pkl_name else src.read(n))
    with pytest.raises(MaskFileError, match="outside its storage"):
        load_masks(path, get_arch("mlp:6-5-4-3"))


def test_save_rejects_unknown_suffix_and_keeps_old_file(tmp_path):
    arch = get_arch("mlp:2-2")
    path = tmp_path / "m.npz"
    save_masks(path, ones_masks(arch))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=".npz or .safetensors"):
        save_masks(tmp_path / "m.h5", ones_masks(arch))
    with pytest.raises(ValueError, match="reuse mask names"):
        save_masks(path, ones_masks(arch), extra={"fc1": np.zeros(2)})
    assert path.read_bytes() == before


def test_keras_layout_file():
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.5, 3)
    keras = {k: to_layout(v, "keras") for k, v in masks.items()}
    assert_masks_equal(masks_from_arrays(arch, keras, layout="keras"), masks)


def test_load_weights_prefers_weights_and_recognises_a_run_state(tmp_path, data_dir):
    from connsim.trainer.network import Network

    arch = get_arch("mlp:6-5-4-3")
    w, state = load_weights(os.path.join(data_dir, "mlp_prune_api.pt"), arch)
    assert state == {}  # a plain state dict: weights only
    assert all((v != 0).all() for v in w.values())  # weight_orig, not the pruned weight_mask
    net = Network(arch, rng=0)
    path = tmp_path / "weights.npz"
    np.savez(path, **net.state_dict())
    w2, state2 = load_weights(path, arch)
    np.testing.assert_array_equal(w2["fc2"], net.weights()["fc2"])
    assert set(state2) == set(net.state_dict())
    bad = tmp_path / "nan.npz"
    np.savez(bad, **{k: (np.full_like(v, np.nan) if v.ndim == 2 else v)
                     for k, v in net.state_dict().items()})
    with pytest.raises(MaskFileError, match="NaN"):
        load_weights(bad, arch)


# ------------------------------------------------------------------------- hostile files


def _obj(x) -> bytes:
    """Pickle opcodes of one object, without the protocol header and STOP."""
    return pickle.dumps(x, protocol=2)[2:-1]


def _tensor_pickle(numel: int, size, stride) -> bytes:
    """A state-dict pickle of one float32 tensor 'fc1.weight' on storage '0' of ``numel``
    elements, as torch.save writes it."""
    return (b"\x80\x02}(" + _obj("fc1.weight") + b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + _obj("storage") + b"ctorch\nFloatStorage\n" + _obj("0") + _obj("cpu") + _obj(numel)
            + b"tQ" + _obj(0) + _obj(tuple(size)) + _obj(tuple(stride)) + b"\x89}tRu.")


def _torch_file(path, payload: bytes, storage: bytes = b"\0\0\x80?"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/data/0", storage)
        z.writestr("archive/version", "3\n")




def _state_pickle(entries) -> bytes:
    """A state-dict pickle of float32 tensors ``(name, storage key, storage numel, offset, size,
    stride)``, as torch.save writes it."""
    body = b"".join(
        _obj(name) + b"ctorch._utils\n_rebuild_tensor_v2\n((" + _obj("storage")
        + b"ctorch\nFloatStorage\n" + _obj(key) + _obj("cpu") + _obj(numel) + b"tQ" + _obj(offset)
        + _obj(tuple(size)) + _obj(tuple(stride)) + b"\x89}tR"
        for name, key, numel, offset, size, stride in entries)
    return b"\x80\x02}(" + body + b"u."


def _torch_state(path, entries, storages: dict, byteorder: str = "little"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _state_pickle(entries))
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("order", ["little", "big"])
def test_torch_tensors_are_read_from_their_storage_in_either_byte_order(tmp_path, order):
    base = np.arange(24, dtype=np.float32)
    path = tmp_path / "state.pt"
    _torch_state(path, [("fc1.weight", "0", 24, 0, (4, 6), (6, 1)),  # the whole storage, in order
                        ("fc2.weight", "0", 24, 3, (2, 3), (1, 6))],  # a strided view inside it
                 {"0": base.astype(">f4" if order == "big" else "<f4").tobytes()}, order)
    got = read_arrays(path)
    np.testing.assert_array_equal(got["fc1.weight"], base.reshape(4, 6))
    np.testing.assert_array_equal(got["fc2.weight"], [[3, 9, 15], [4, 10, 16]])
    assert all(a.flags.writeable and a.dtype == np.float32 for a in got.values())


@pytest.mark.parametrize("kind", ["npz", "safetensors", "pt"])
def test_load_masks_holds_one_raw_entry_at_a_time(tmp_path, kind):
    """float32 weights in, boolean masks out: the peak is the masks plus one layer's weights,
    not the whole file's weights (5x the masks' bytes when every entry was read first)."""
    from safetensors.numpy import save_file

    arch = get_arch("mlp:784-600-600-600-10")
    masks = random_masks(arch, 0.3, 0)
    weights = {f"{k}.weight": np.where(m, 1.5, 0).astype(np.float32) for k, m in masks.items()}
    path = tmp_path / f"w.{kind}"
    if kind == "npz":
        np.savez(path, **weights)
    elif kind == "safetensors":
        save_file(weights, str(path))
    else:
        _torch_state(path, [(k, str(i), w.size, 0, w.shape, (w.shape[1], 1))
                            for i, (k, w) in enumerate(weights.items())],
                     {str(i): w.tobytes() for i, w in enumerate(weights.values())})
    assert_masks_equal(load_masks(path, arch), masks)
    raised, peak = peak_memory(load_masks, path, arch)
    assert raised is None
    mask_bytes = sum(m.nbytes for m in masks.values())
    largest = max(w.nbytes for w in weights.values())
    assert peak <= 1.1 * (mask_bytes + largest), (peak, mask_bytes, largest)


def test_a_storage_is_charged_before_it_is_allocated(tmp_path):
    """A (1, 1) tensor over a 200 MiB deflated storage: the file is a few hundred KB, so the
    storage exceeds its memory budget and is refused before any of it is allocated."""
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _state_pickle([("fc1.weight", "0", 50 * 2**20, 0, (1, 1),
                                                       (1, 1))]))
        z.writestr("archive/data/0", bytes(200 * 2**20), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/version", "3\n")
    assert path.stat().st_size < 2**20
    raised, peak = peak_memory(read_arrays, path)
    assert isinstance(raised, MaskFileError) and "would need 200.0 MiB" in str(raised)
    assert peak < 16 * 2**20


def test_a_shared_storage_is_decoded_once(tmp_path, monkeypatch):
    """Many views of one storage (tied weights, flat buffers, or a hostile file) decode it once,
    and views of a shared storage come back as copies that do not alias one another."""
    base = np.arange(4096, dtype=np.float32)
    views = [(f"v{i}.weight", "0", 4096, i, (2, 2), (64, 1)) for i in range(300)]
    path = tmp_path / "views.pt"
    _torch_state(path, [("fc1.weight", "0", 4096, 0, (64, 64), (64, 1)), *views],
                 {"0": base.tobytes()})
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: (
        opened.append(getattr(name, "filename", name)) or real_open(self, name, *a, **k)))
    got = read_arrays(path)
    assert opened.count("archive/data/0") == 1
    np.testing.assert_array_equal(got["fc1.weight"], base.reshape(64, 64))
    np.testing.assert_array_equal(got["v5.weight"], [[5, 6], [69, 70]])
    got["fc1.weight"][0, 5] = -1
    assert got["v5.weight"][0, 0] == 5


def test_boolean_entries_of_any_byte_become_0_1_masks(tmp_path):
    """A file's booleans may hold bytes other than 0/1 (written as uint8, read as bool); they
    are masks of 0 and 1 once loaded, as weights or as masks."""
    arch = get_arch("mlp:4-3-2")
    odd = {n: np.full(arch.weight_shape(n), 2, np.uint8).view(bool) for n in arch.layer_names}
    for suffix in (".weight", ".weight_mask"):
        path = tmp_path / f"odd{suffix}.npz"
        np.savez(path, **{n + suffix: a for n, a in odd.items()})
        masks = load_masks(path, arch)
        assert all(m.view(np.uint8).max() == 1 and m.all() for m in masks.values())
        assert measure(arch, masks).effective == arch.total_params


def _corrupt_deflate(raw: bytes) -> bytes:
    """``raw`` (a np.savez_compressed file) with the first member's deflate stream broken: its
    first block is given the reserved block type 3."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        info = z.infolist()[0]
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    return raw[:start] + bytes([raw[start] | 0x06]) + raw[start + 1:]


def test_corrupt_deflate_stream_names_file_and_entry(tmp_path):
    arch = get_arch("mlp:6-5-4-3")
    path = tmp_path / "m.npz"
    save_masks(path, random_masks(arch, 0.5, 0))
    path.write_bytes(_corrupt_deflate(path.read_bytes()))
    for read in (read_arrays, lambda p: load_masks(p, arch), lambda p: load_weights(p, arch)):
        with pytest.raises(MaskFileError, match=r"m\.npz'?: entry 'fc1' is corrupt \(zlib\.error"):
            read(path)


@pytest.mark.parametrize("payload", [
    b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.",  # {'a': <itself>}
    b"\x80\x02" + b"}X\x01\x00\x00\x00a" * 100_000 + b"}" + b"s" * 100_000 + b".",
    b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s.",  # a key 10^6 tuples deep
], ids=["self-reference", "100k-nested-dicts", "1M-nested-tuple-key"])
def test_self_referencing_and_deep_pickles_fail_cleanly(tmp_path, payload):
    path = tmp_path / "deep.pt"
    _torch_like_zip(path, payload)
    start = time.perf_counter()
    with pytest.raises(MaskFileError, match="contains itself|levels deep"):
        read_arrays(path)
    assert time.perf_counter() - start < 5


def test_shared_dicts_cannot_multiply_the_work(tmp_path):
    shared = {}
    for _ in range(22):  # 2^22 paths through 22 dicts
        shared = {"a": shared, "b": shared}
    path = tmp_path / "shared.pt"
    _torch_like_zip(path, pickle.dumps(shared, protocol=2))
    start = time.perf_counter()
    with pytest.raises(MaskFileError, match="refer to one another"):
        read_arrays(path)
    assert time.perf_counter() - start < 1


def test_zero_stride_tensor_cannot_inflate_memory(tmp_path):
    # 30000 x 30000 float32 views of one stored element: 3.4 GiB from a file of a few hundred bytes
    path = tmp_path / "inflate.pt"
    _torch_file(path, _tensor_pickle(1, (30000, 30000), (0, 0)))
    assert path.stat().st_size < 1000
    raised, peak = peak_memory(read_arrays, path)
    assert isinstance(raised, MaskFileError)
    assert re.search(r"shape \(30000, 30000\) would need 3\.4 GiB of memory.*at most 64\.0 MiB "
                     r"\(max\(64\.0 MiB, 16 x its size\)\).*refused", str(raised))
    assert peak < 16 * 2**20
    # the same view within the budget is fine
    _torch_file(path, _tensor_pickle(1, (3, 4), (0, 0)))
    np.testing.assert_array_equal(read_arrays(path)["fc1.weight"], np.ones((3, 4), np.float32))


def test_storage_numel_is_bounded_by_the_bytes_stored(tmp_path):
    path = tmp_path / "numel.pt"
    _torch_file(path, _tensor_pickle(10**9, (1,), (1,)))
    with pytest.raises(MaskFileError, match="declares 1000000000 elements of 4 bytes but holds 4"):
        read_arrays(path)


def test_npz_header_cannot_declare_more_than_its_data(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (2**31,)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fc1.npy", header.getvalue() + bytes(64))
    raised, peak = peak_memory(read_arrays, path)
    assert isinstance(raised, MaskFileError)
    assert re.search(r"entry 'fc1': its header declares shape \(2147483648,\) of float64 "
                     r"\(16\.0 GiB\) but it holds 64 bytes", str(raised))
    assert peak < 16 * 2**20


def test_zip_directory_claiming_more_than_deflate_can_hold(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, fc1=np.zeros((5, 6)))
    raw = bytearray(path.read_bytes())
    at = raw.rindex(b"PK\x01\x02")  # central directory entry: uncompressed size at offset 24
    raw[at + 24: at + 28] = (2**32 - 2).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(MaskFileError, match="more than its compression can produce"):
        read_arrays(path)


NON_NUMERIC = [np.full((5, 6), "1"), np.full((5, 6), b"1"), np.zeros((5, 6), "datetime64[s]"),
               np.zeros((5, 6), "timedelta64[s]"), np.ones((5, 6), object), np.ones((5, 6), complex),
               np.zeros((5, 6), "V4"), np.zeros((5, 6), [("a", "<f4")])]


@pytest.mark.parametrize("values", NON_NUMERIC, ids=lambda a: str(a.dtype))
@pytest.mark.parametrize("key", ["fc1", "fc1.weight_mask"])
def test_non_numeric_arrays_are_refused(values, key):
    arch = get_arch("mlp:6-5")
    with pytest.raises(MaskFileError, match=rf"entry '{key}' \(layer 'fc1'\) has dtype "
                                            r".*; (masks|weights) must be boolean or real numbers"):
        masks_from_arrays(arch, {key: values})


@pytest.mark.parametrize("values", [np.full((5, 6), "1"), np.ones((5, 6), complex),
                                    np.zeros((5, 6), "datetime64[s]")], ids=lambda a: str(a.dtype))
def test_load_weights_refuses_non_numeric_and_infinite_weights(tmp_path, values):
    arch = get_arch("mlp:6-5")
    path = tmp_path / "w.npz"
    np.savez(path, fc1=values)
    with pytest.raises(MaskFileError, match=r"has dtype .*weights must be boolean or real"):
        load_weights(path, arch)
    np.savez(path, fc1=np.full((5, 6), np.inf))
    with pytest.raises(MaskFileError, match="NaN or infinity"):
        load_weights(path, arch)


def test_directories_and_special_files_are_named_for_what_they_are(tmp_path):
    arch = get_arch("mlp:2-2")
    folder = tmp_path / "masks.npz"
    folder.mkdir()
    with pytest.raises(MaskFileError, match="is a directory; a mask file .* is expected"):
        load_masks(folder, arch)
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(MaskFileError, match="is not a regular file"):
        load_masks(fifo, arch)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
@pytest.mark.parametrize("suffix", [".npz", ".pt", ".safetensors"])
def test_unreadable_mask_file(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(MaskFileError, match="(?i)permission denied"):
        read_arrays(path)


def test_failed_save_names_the_target_not_a_temporary_file(tmp_path):
    target = tmp_path / "missing-folder" / "m.npz"
    with pytest.raises(OSError) as info:
        save_masks(target, ones_masks(get_arch("mlp:2-2")))
    assert str(target) in str(info.value) and ".tmp-" not in str(info.value)
