"""Inputs the scripts cannot use end in one clear line (exit 2), never a traceback or a silent choice: a
password-protected zip, members compressed by a method zipfile lacks, names stored twice, an .npz given for a .npy,
an empty held-out set, and a disk that fills up while a report or a figure is written."""
import builtins
import errno
import json
import os
import struct
import zipfile

import numpy as np
import pytest

from facegan import data_io
import evaluate
import preprocess
import random_baseline
import train
from conftest import TINY_TRAIN_FLAGS, jpeg_bytes


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _zip_of_photos(path, n=6, flag_bits=0, method=None, only=None):
    """A zip of n JPEGs; with flag_bits 1 its members are marked encrypted (as `zip -e` leaves them), with
    `method` another compression method is declared (for the members whose index is in `only`, or all)."""
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(n):
            archive.writestr(f"img_align_celeba/{i:06d}.jpg", jpeg_bytes(seed=i))
    raw = bytearray(path.read_bytes())
    for signature, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at, index = raw.find(signature), 0
        while at >= 0:
            if only is None or index in only:
                if flag_bits:
                    raw[at + flags_at:at + flags_at + 2] = struct.pack("<H", flag_bits)
                if method is not None:
                    raw[at + method_at:at + method_at + 2] = struct.pack("<H", method)
            at, index = raw.find(signature, at + 4), index + 1
    path.write_bytes(bytes(raw))
    return path


def _preprocess(tmp_path, source):
    return preprocess.main(["--source", str(source), "--out", str(tmp_path / "out" / "x"), "--holdout", "1",
                            "--workers", "1"])


@pytest.mark.parametrize("make, message", [
    (lambda p: _zip_of_photos(p, flag_bits=1), "they are password-protected (encrypted); extract them"),
    (lambda p: _zip_of_photos(p, method=9), "compressed with method 9, which Python's zipfile cannot read"),
])
def test_a_zip_whose_images_cannot_be_read_is_one_line_for_every_reader(tmp_path, capsys, make, message):
    source = make(tmp_path / "faces.zip")
    assert _preprocess(tmp_path, source) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    assert random_baseline.main(["--kind", "gaussian", "--data", str(source), "--out", str(tmp_path / "rb")]) == 2
    assert message in _one_line(capsys.readouterr().err)
    with pytest.raises(data_io.DataError, match="cannot read the images inside"):
        data_io.load_image_array(str(source), 32)


def test_members_a_zip_cannot_read_among_readable_ones_are_skipped_and_named(tmp_path, capsys):
    source = _zip_of_photos(tmp_path / "faces.zip", method=9, only={2})
    assert _preprocess(tmp_path, source) == 0
    meta = json.loads((tmp_path / "out" / "x.json").read_text())
    assert meta["train_count"] + meta["holdout_count"] == 5
    assert meta["skipped"] == [{"file": "img_align_celeba/000002.jpg", "reason": "unreadable: compressed with method "
                                "9, which Python's zipfile cannot read (it reads stored, deflate, bzip2, lzma)"}]


def test_an_image_stored_twice_under_one_name_is_read_once_and_said(tmp_path, capsys):
    source = tmp_path / "faces.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for i in range(4):
            archive.writestr(f"{i:06d}.jpg", jpeg_bytes(seed=i))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("000001.jpg", jpeg_bytes(seed=9))
    assert _preprocess(tmp_path, source) == 0
    assert "1 image names appear twice" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "x.json").read_text())
    assert meta["train_count"] + meta["holdout_count"] == 4  # not the same file in training and held out


def test_an_npz_given_as_training_data_is_one_line(tmp_path, capsys):
    with open(tmp_path / "faces_train.npy", "wb") as f:  # a file object: np.savez adds no .npz to its name
        np.savez(f, images=np.zeros((32, 32, 32, 3), np.uint8))
    assert train.main(["--data", str(tmp_path / "faces_train.npy"), "--out", str(tmp_path / "out"),
                       *TINY_TRAIN_FLAGS]) == 2
    assert "is an .npz archive (arrays zipped together), not a .npy array" in _one_line(capsys.readouterr().err)


def test_an_empty_held_out_set_is_refused_when_given_and_dropped_when_found(tmp_path, tiny_faces, capsys):
    np.save(tmp_path / "faces_train.npy", tiny_faces[:32])
    np.save(tmp_path / "faces_holdout.npy", tiny_faces[:0])  # preprocess.py --holdout 0 writes this
    flags = ["--data", str(tmp_path / "faces_train.npy"), "--out", str(tmp_path / "out"), *TINY_TRAIN_FLAGS,
             "--epochs", "1", "--precision", "fp32"]
    assert train.main([*flags, "--holdout", str(tmp_path / "faces_holdout.npy")]) == 2
    assert "holds no images" in _one_line(capsys.readouterr().err)
    assert train.main([*flags, "--name", "run"]) == 0  # a whole epoch, then its memorisation probe: none
    assert "holds no images" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "run" / "config.json").read_text())["holdout"] is None


@pytest.fixture
def finished_run(tmp_path, tiny_dataset):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "1",
                       *TINY_TRAIN_FLAGS, "--precision", "fp32"]) == 0
    return tmp_path / "run"


@pytest.mark.parametrize("fills_at", ["comparison.png", "report.md"])
def test_a_disk_that_fills_while_evaluate_writes_leaves_no_half_written_file(finished_run, tmp_path, capsys,
                                                                             monkeypatch, quick_judge, fills_at):
    real_open = builtins.open

    class FillingFile:
        """Writes half of what it is given, then reports the disk full (as a write(2) that runs out of room)."""

        def __init__(self, file):
            self.file = file

        def write(self, data):
            self.file.write(data[:len(data) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def open_on_a_filling_disk(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        if fills_at in os.path.basename(str(file)) and ("w" in mode or "a" in mode):
            return FillingFile(opened)
        return opened
    monkeypatch.setattr(builtins, "open", open_on_a_filling_disk)
    out = tmp_path / "eval"
    assert evaluate.main([str(finished_run), "--n", "20", "--no-quality", "--out", str(out)]) == 2
    monkeypatch.setattr(builtins, "open", real_open)
    assert "disk full" in _one_line(capsys.readouterr().err)
    assert not [name for name in os.listdir(out) if fills_at in name]  # neither the file nor a temporary
