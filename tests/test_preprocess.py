import json
import os
import zipfile

import cv2
import numpy as np
import pytest

import preprocess
from conftest import jpeg_bytes


def _names(n):
    return [f"{i:06d}.jpg" for i in range(1, n + 1)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _run(tmp_path, source, *extra):
    out = str(tmp_path / "out" / "faces")
    code = preprocess.main(["--source", str(source), "--out", out, "--workers", "2", *extra])
    return code, out


def _check_outputs(out, n_train, n_holdout, size=64):
    train, holdout = np.load(out + "_train.npy"), np.load(out + "_holdout.npy")
    assert train.shape == (n_train, size, size, 3) and train.dtype == np.uint8
    assert holdout.shape == (n_holdout, size, size, 3)
    with open(out + ".json") as f:
        meta = json.load(f)
    assert meta["train_count"] == n_train and meta["holdout_count"] == n_holdout
    return meta


def test_official_zip_read_without_extraction(tmp_path, rng):
    source = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for name in _names(12):
            archive.writestr(f"img_align_celeba/{name}", jpeg_bytes(seed=int(rng.integers(1 << 30))))
    code, out = _run(tmp_path, source, "--holdout", "2", "--limit", "8")
    assert code == 0
    meta = _check_outputs(out, 8, 2)
    assert meta["first_train_file"].endswith("000001.jpg") and meta["last_train_file"].endswith("000008.jpg")
    assert not os.path.exists(tmp_path / "img_align_celeba")  # nothing extracted


def test_extracted_folder_with_a_corrupt_file_is_skipped_and_reported(tmp_path, rng):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for name in _names(10):
        (folder / name).write_bytes(jpeg_bytes(seed=int(rng.integers(1 << 30))))
    (folder / "000003.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored")
    code, out = _run(tmp_path, folder, "--holdout", "2")
    assert code == 0
    meta = _check_outputs(out, 7, 2)
    assert [s["file"] for s in meta["skipped"]] == ["000003.jpg"]


def test_kaggle_layout_and_partition_file(tmp_path, rng):
    root = tmp_path / "celeba-dataset"
    folder = root / "img_align_celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    names = _names(10)
    for name in names:
        (folder / name).write_bytes(jpeg_bytes(seed=int(rng.integers(1 << 30))))
    # Kaggle ships the partition as CSV: images 1-6 train, 7 validation, 8-10 test
    rows = ["image_id,partition"] + [f"{n},{0 if i < 6 else 1 if i == 6 else 2}" for i, n in enumerate(names)]
    (root / "list_eval_partition.csv").write_text("\n".join(rows) + "\n")
    code, out = _run(tmp_path, root, "--holdout", "2")
    assert code == 0
    meta = _check_outputs(out, 6, 2)
    assert meta["holdout_from"] == "celeba test partition"


def test_default_crop_is_central_square_of_full_width(tmp_path):
    # a 40x60 image: rows 10..49 (the central 40x40 square) are green, the rest red
    image = np.zeros((60, 40, 3), np.uint8)
    image[:, :] = (0, 0, 255)
    image[10:50] = (0, 255, 0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(3):
        cv2.imwrite(str(folder / name.replace(".jpg", ".png")), image)
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32")
    assert code == 0
    train = np.load(out + "_train.npy")
    assert train.shape == (2, 32, 32, 3)
    assert (train[..., 1] == 255).all() and (train[..., 0] == 0).all()  # all green, RGB order


def test_tight_crop_keeps_the_central_108_of_178(tmp_path):
    # CelebA's 178x218 layout: the central 108x108 square is green, everything around it red
    image = np.zeros((218, 178, 3), np.uint8)
    image[:, :] = (0, 0, 255)
    image[55:163, 35:143] = (0, 255, 0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(3):
        cv2.imwrite(str(folder / name.replace(".jpg", ".png")), image)
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32", "--crop", "tight")
    assert code == 0
    tight = np.load(out + "_train.npy")
    assert (tight[..., 1] == 255).all() and (tight[..., 0] == 0).all()  # the green square alone
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32")
    assert code == 0 and (np.load(out + "_train.npy")[..., 0] > 128).any()  # the default crop shows red


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no .jpg/.png images"),
    (lambda p: (p / "a.zip").write_bytes(b"PK\x03\x04 truncated") and p / "a.zip", "neither a folder nor a zip"),
])
def test_bad_sources_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, make_source, message):
    code, out = _run(tmp_path, make_source(tmp_path))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_all_images_corrupt_is_an_error(tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(4):
        (folder / name).write_bytes(b"garbage")
    code, _ = _run(tmp_path, folder, "--holdout", "1")
    assert code == 2 and "could be decoded" in capsys.readouterr().err


def test_real_celeba_zip(tmp_path, celeba_zip):
    code, out = _run(tmp_path, celeba_zip, "--limit", "64", "--holdout", "16")
    assert code == 0
    meta = _check_outputs(out, 64, 16)
    assert meta["last_train_file"].endswith("000064.jpg")
    first = np.load(out + "_train.npy")[0]
    with zipfile.ZipFile(celeba_zip) as archive:
        raw = cv2.imdecode(np.frombuffer(archive.read("img_align_celeba/000001.jpg"), np.uint8), cv2.IMREAD_COLOR)
    top = (raw.shape[0] - raw.shape[1]) // 2
    expected = cv2.resize(raw[top:top + raw.shape[1]], (64, 64), interpolation=cv2.INTER_AREA)[..., ::-1]
    assert np.array_equal(first, expected)
