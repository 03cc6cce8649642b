"""Held-out faces are held out however they were prepared: the run's training photos under another crop or
resampling are refused as its held-out set (by their preprocess.py descriptions, and by comparing thumbnails when
there are none), by train.py, evaluate.py and after a resume on other data."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from facegan import data_io
from facegan import demo_faces
import evaluate
import preprocess
import train
from conftest import TINY_TRAIN_FLAGS


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """80 face photos, 160x196 like CelebA's aligned ones, and two preparations of them: center crop (60 to
    train on, the next 20 held out) and tight crop of the same files (the held-out 20 are files 10-29: training
    photos of the first)."""
    folder = tmp_path_factory.mktemp("photos")
    faces = demo_faces.make_demo_faces(80, size=160, seed=11)
    source = folder / "source"
    source.mkdir()
    for i, face in enumerate(faces):
        photo = np.pad(face, ((18, 18), (0, 0), (0, 0)), mode="edge")
        cv2.imwrite(str(source / f"{i:06d}.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    for prefix, flags in (("c32", ["--limit", "60", "--holdout", "20"]),
                          ("t32", ["--limit", "10", "--holdout", "20", "--crop", "tight"])):
        assert preprocess.main(["--source", str(source), "--out", str(folder / prefix), "--size", "32",
                                "--workers", "1", *flags]) == 0
    return folder


@pytest.fixture(scope="module")
def run(photos):
    assert train.main(["--data", str(photos / "c32_train.npy"), "--out", str(photos), "--name", "run",
                       "--epochs", "1", *TINY_TRAIN_FLAGS, "--precision", "fp32"]) == 0
    config = json.loads((photos / "run" / "config.json").read_text())
    assert config["holdout"] == str(photos / "c32_holdout.npy")  # a held-out set prepared the same way is taken
    return photos / "run"


def test_training_photos_cropped_tight_are_refused_as_the_held_out_set_of_a_center_cropped_run(photos, tmp_path,
                                                                                               capsys):
    flags = ["--data", str(photos / "c32_train.npy"), "--out", str(tmp_path), *TINY_TRAIN_FLAGS]
    assert train.main([*flags, "--holdout", str(photos / "t32_holdout.npy")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "was prepared otherwise than the training data" in line and "crop 'tight' (the training data: 'center')" \
        in line
    shutil.copy(photos / "t32_holdout.npy", tmp_path / "tight.npy")  # the same array without its description
    assert train.main([*flags, "--holdout", str(tmp_path / "tight.npy")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "20 of its 20 images are photos of the training data" in line and "is training image 10 cropped tighter" \
        in line
    assert os.listdir(tmp_path) == ["tight.npy"]


def test_evaluate_refuses_training_photos_under_another_crop_or_resampling(run, photos, tmp_path, capsys):
    center = np.load(photos / "c32_train.npy")
    resampled = np.stack([cv2.resize(cv2.resize(face, (48, 48), interpolation=cv2.INTER_CUBIC), (32, 32),
                                     interpolation=cv2.INTER_LINEAR) for face in center[:30]])
    np.save(tmp_path / "resampled.npy", resampled)
    shutil.copy(photos / "t32_holdout.npy", tmp_path / "tight.npy")
    for real, message in (("resampled.npy", "30 of its 30 images are photos of the training data"),
                          ("tight.npy", "20 of its 20 images are photos of the training data")):
        assert evaluate.main([str(run), "--real", str(tmp_path / real), "--out", str(tmp_path / "eval"),
                              "--no-quality"]) == 2
        assert message in _one_line(capsys.readouterr().err)


def test_a_few_near_copies_are_noted_and_another_source_is_said_in_the_report(photos, tmp_path):
    held = np.load(photos / "c32_holdout.npy")
    train_images = np.load(photos / "c32_train.npy")
    near_copy = cv2.resize(cv2.resize(train_images[5], (48, 48), interpolation=cv2.INTER_CUBIC), (32, 32),
                           interpolation=cv2.INTER_AREA)
    images = np.concatenate([np.concatenate([held] * 5)[:99], near_copy[None]])  # 1 in 100: the data's own
    note = data_io.check_held_out(images, "held.npy", 32, str(photos / "c32_train.npy"))
    assert "1 of the 100 images of held.npy are near-copies of training images of the run (e.g. its image 99 and " \
           "training image 5)" in note and "held.npy has no preprocess.py description" in note
    other = tmp_path / "other"
    data_io.save_dataset(str(other), held[:4], held, json.loads((photos / "c32.json").read_text()) | {
        "source": "/elsewhere/faces.zip"})
    note = data_io.check_held_out(held, str(other) + "_holdout.npy", 32, str(photos / "c32_train.npy"))
    assert "was made from /elsewhere/faces.zip" in note and "measures that difference too" in note


def test_after_a_resume_on_other_data_the_held_out_set_must_be_none_of_either_datas_images(run, photos, tmp_path,
                                                                                           capsys):
    copy = shutil.copytree(run, tmp_path / "run")
    faces = np.load(photos / "c32_train.npy")
    held = np.load(photos / "c32_holdout.npy")
    np.save(tmp_path / "more.npy", np.concatenate([faces[:40], held]))  # new data that holds the held-out faces
    assert train.main(["--resume", str(copy), "--epochs", "2", "--data", str(tmp_path / "more.npy"),
                       "--allow-data-change"]) == 0
    assert "no held-out images recorded" in capsys.readouterr().out
    config = json.loads((copy / "config.json").read_text())
    assert config["holdout"] is None and config["earlier_data"][0]["data"] == str(photos / "c32_train.npy")
    np.save(tmp_path / "earlier.npy", faces[40:60])  # faces only the first data held, never the second
    assert evaluate.main([str(copy), "--real", str(tmp_path / "earlier.npy"), "--no-quality"]) == 2
    assert "20 of its 20 images are in the training data" in _one_line(capsys.readouterr().err)
