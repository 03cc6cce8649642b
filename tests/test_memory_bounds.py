"""Memory bounded by the work asked for: every size a user asks for (--n, --batch-size, --limit, grid and sheet
sizes) or a file declares (.npy headers, image dimensions) is checked before the memory is taken, or the work is
streamed. The machine's available memory is set by the tests (data_io.available_memory), never read."""
import io
import json
import os

import cv2
import numpy as np
import pytest

from facegan import baseline
from facegan import data_io
from facegan import evaluation
from facegan import training_loop
import evaluate
import generate
import preprocess
import random_baseline
import train
from conftest import TINY_TRAIN_FLAGS, jpeg_bytes


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _header_bomb(path, shape, dtype="<f4"):
    """A .npy file whose header declares `shape` and which holds 100 bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + bytes(100))
    return path


@pytest.fixture
def run(tmp_path, tiny_dataset):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "1",
                       *TINY_TRAIN_FLAGS, "--precision", "fp32", "--snapshot-every", "1"]) == 0
    return tmp_path / "run"


def test_a_batch_whose_step_cannot_fit_in_memory_is_refused_before_it_runs(tmp_path, tiny_dataset, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(data_io, "available_memory", lambda: 1 << 20)
    monkeypatch.setattr(training_loop, "make_trainer", lambda *a: pytest.fail("built the step"))
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "out"), "--batch-size", "64", "--g-width",
                       "32", "--d-width", "32", "--precision", "fp32"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "training at --batch-size 64 on 64 images needs about" in line and "give a smaller --batch-size" in line
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_an_n_whose_scoring_cannot_fit_in_memory_before_any_sample(run, capsys, monkeypatch):
    monkeypatch.setattr(data_io, "available_memory", lambda: 4 << 30)
    monkeypatch.setattr(evaluation, "resolve_system", lambda *a: pytest.fail("sampled"))
    needed = evaluation.scoring_memory(1_000_000, 32, 3)
    assert evaluate.main([str(run), "--n", "1000000"]) == 2
    assert f"scoring 1,000,000 images per set needs about {needed / 1e9:.1f} GB" in _one_line(capsys.readouterr().err)
    assert evaluate.main([str(run), "--n", "1000000", "--curve"]) == 2
    assert "give a smaller --n" in _one_line(capsys.readouterr().err)


def test_preprocess_refuses_a_set_larger_than_memory_before_decoding(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i:06d}.jpg").write_bytes(jpeg_bytes(seed=i))
    monkeypatch.setattr(data_io, "available_memory", lambda: 100_000)
    monkeypatch.setattr(data_io, "read_image", lambda *a: pytest.fail("decoded"))
    assert preprocess.main(["--source", str(folder), "--out", str(tmp_path / "out" / "x"), "--holdout", "1",
                            "--workers", "1", "--size", "128"]) == 2
    assert "6 images of 128 px needs about 0.6 MB of memory; this machine has 0.1 MB available" in _one_line(
        capsys.readouterr().err)


def test_a_npy_header_that_declares_more_than_its_file_holds_takes_no_memory(run, tmp_path, capsys):
    _header_bomb(tmp_path / "bomb_train.npy", (10 ** 9, 64, 64, 3), "|u1")
    assert train.main(["--data", str(tmp_path / "bomb_train.npy"), "--out", str(tmp_path / "out")]) == 2
    assert "declares a uint8 array of shape (1000000000, 64, 64, 3)" in _one_line(capsys.readouterr().err)
    _header_bomb(run / "fixed_noise.npy", (10 ** 9, 100))
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 2
    assert "fixed_noise.npy declares a float32 array" in _one_line(capsys.readouterr().err)
    _header_bomb(tmp_path / "z.npy", (10 ** 9, 8))
    assert generate.main(["arithmetic", str(run), "--a", "1", "--b", "2", "--c", "3", "--z-file",
                          str(tmp_path / "z.npy"), "--out", str(tmp_path / "gen")]) == 2
    assert "cut off or damaged" in _one_line(capsys.readouterr().err)


def test_shrunken_grids_and_sheets_are_sized_by_the_faces_made_at_full_size(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_io, "generate_images", lambda *a: pytest.fail("made faces"))
    for argv, what in ((["sample", "--n", "100000", "--format", "grid", "--scale", "0.1"], "a grid of 100,000"),
                       (["arithmetic", "--pick-sheet", "--sheet-size", "100000", "--scale", "0.1"], "a sheet of 100,000"),
                       (["neighbours", "--n", "30000", "--k", "1", "--scale", "0.1"], "30000 faces beside 1")):
        assert generate.main([argv[0], str(run), *argv[1:], "--out", str(tmp_path / "gen")]) == 2
        assert what in _one_line(capsys.readouterr().err)


def test_an_epoch_grid_declaring_a_huge_picture_is_not_decoded(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_io, "MAX_IMAGE_PIXELS", 150 * 150)
    cv2.imwrite(str(run / "samples" / "epoch_001.png"), np.zeros((300, 300, 3), np.uint8))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    assert generate.main(["progress", str(run), "--out", str(tmp_path / "gen")]) == 2
    assert "90,000 pixels, over the 22,500-pixel limit" in _one_line(capsys.readouterr().err)


def test_the_random_baseline_is_made_and_written_a_chunk_at_a_time(tmp_path, monkeypatch):
    import tracemalloc
    monkeypatch.setattr(baseline, "CHUNK_BYTES", 32 * 32 * 3 * 4 * 100)  # 100 images a chunk
    peaks = {}
    for n in (100, 3000):
        tracemalloc.start()
        try:
            assert random_baseline.main(["--n", str(n), "--size", "32", "--out", str(tmp_path / str(n))]) == 0
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    images = np.load(tmp_path / "3000" / "samples.npy")
    assert peaks[3000] - peaks[100] < images.nbytes / 5
    np.testing.assert_array_equal(images, np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8))


def test_arithmetic_draws_only_the_rows_of_the_faces_it_picks_whatever_the_sheet_size(run, tmp_path, monkeypatch):
    drawn = []
    sample_z = data_io.sample_z
    monkeypatch.setattr(data_io, "sample_z", lambda n, *a, **k: drawn.append(n) or sample_z(n, *a, **k))
    assert generate.main(["arithmetic", str(run), "--a", "1", "--b", "2", "--c", "7", "--sheet-size", "1000000000",
                          "--out", str(tmp_path / "gen")]) == 0
    assert drawn == [8]
