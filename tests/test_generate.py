"""generate.py on a tiny hand-made run directory: 32 px, 8-d noise, an untrained (but not flat) generator."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from facegan import data_io
import generate
import models

LATENT, SIZE = 8, 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """What train.py leaves behind, made by hand: config.json, generator.keras, training data, samples/."""
    run = tmp_path_factory.mktemp("run")
    generator = models.build_generator(latent_dim=LATENT, image_size=SIZE, width=8)
    for layer in generator.layers:  # an untrained DCGAN draws flat grey; larger weights give varied pictures
        if hasattr(layer, "kernel"):
            layer.kernel.assign(layer.kernel * 5)
    generator.save(run / "generator.keras")
    data = run / "train.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (40, SIZE, SIZE, 3), dtype=np.uint8))
    (run / "config.json").write_text(json.dumps({"latent_dim": LATENT, "image_size": SIZE, "epochs": 2,
                                                  "data": str(data)}))
    (run / "samples").mkdir()
    for epoch, value in ((1, 40), (2, 200)):
        data_io.save_png(str(run / "samples" / f"epoch_{epoch:03d}.png"), np.full((70, 70, 3), value, np.uint8))
    return str(run)


def gif_frames(path):
    with Image.open(path) as gif:
        return gif.n_frames, gif.size


def test_sample_writes_n_pngs_and_an_npy_and_the_same_seed_gives_the_same_faces(run, tmp_path):
    assert generate.main(["sample", run, "--n", "5", "--out", str(tmp_path / "a")]) == 0
    faces = np.load(tmp_path / "a" / "samples.npy")
    assert faces.shape == (5, SIZE, SIZE, 3) and faces.dtype == np.uint8
    pngs = sorted(p for p in os.listdir(tmp_path / "a") if p.startswith("sample_"))
    assert pngs == [f"sample_{i:04d}.png" for i in range(5)]
    assert np.array_equal(cv2.imread(str(tmp_path / "a" / pngs[3]))[..., ::-1], faces[3])  # lossless, RGB
    assert (tmp_path / "a" / "samples_grid.png").exists()
    assert np.array_equal(data_io.load_image_array(str(tmp_path / "a" / "samples.npy")), faces)  # evaluate.py reads it

    assert generate.main(["sample", run, "--n", "5", "--format", "npy", "--out", str(tmp_path / "b")]) == 0
    assert os.listdir(tmp_path / "b") == ["samples.npy"]
    assert np.array_equal(np.load(tmp_path / "b" / "samples.npy"), faces)
    assert generate.main(["sample", run, "--n", "5", "--seed", "1", "--format", "npy",
                          "--out", str(tmp_path / "c")]) == 0
    assert not np.array_equal(np.load(tmp_path / "c" / "samples.npy"), faces)


def test_sample_defaults_to_the_runs_generated_folder(run):
    assert generate.main(["sample", run, "--n", "2", "--format", "grid"]) == 0
    assert os.path.exists(os.path.join(run, "generated", "samples_grid.png"))


def test_slerp_starts_and_ends_at_the_two_z_and_keeps_a_typical_norm():
    z0, z1 = np.random.default_rng(0).standard_normal((2, 100))
    path = generate.slerp(z0, z1, np.linspace(0, 1, 11))
    assert path.shape == (11, 100)
    assert np.allclose(path[0], z0, atol=1e-5) and np.allclose(path[-1], z1, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    low, high = sorted(np.linalg.norm([z0, z1], axis=1))
    assert np.all(norms > 0.95 * low) and np.all(norms < 1.05 * high)
    assert np.linalg.norm((z0 + z1) / 2) < 0.8 * low  # what a straight line would do at its midpoint
    # orthogonal vectors of equal norm: a quarter circle, the norm exactly constant
    quarter = generate.slerp([3.0, 0.0], [0.0, 3.0], np.linspace(0, 1, 5))
    assert np.allclose(np.linalg.norm(quarter, axis=1), 3.0)
    assert np.allclose(quarter[2], [3 / np.sqrt(2), 3 / np.sqrt(2)])
    assert np.allclose(generate.slerp([1.0, 1.0], [2.0, 2.0], 0.5), [1.5, 1.5])  # parallel: a straight line


def test_interpolate_writes_a_grid_png_and_a_bouncing_gif(run, tmp_path):
    assert generate.main(["interpolate", run, "--rows", "3", "--steps", "4", "--scale", "1",
                          "--out", str(tmp_path)]) == 0
    grid = cv2.imread(str(tmp_path / "interpolate_seed0.png"))
    assert grid.shape == (3 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2, 3)  # one walk per row, one step per column
    frames, size = gif_frames(tmp_path / "interpolate_seed0.gif")
    assert frames == 4 + 2  # 0 1 2 3, then back through 2 1
    assert size == (3 * (SIZE + 2) + 2, SIZE + 4)  # each frame: the 3 walks side by side
    assert generate.main(["interpolate", run, "--rows", "4", "--steps", "5", "--no-bounce",
                          "--out", str(tmp_path / "one_way")]) == 0
    assert gif_frames(tmp_path / "one_way" / "interpolate_seed0.gif")[0] == 5


def test_progress_gif_has_one_frame_per_epoch_png(run, tmp_path):
    assert generate.main(["progress", run, "--scale", "1", "--out", str(tmp_path)]) == 0
    frames, (width, height) = gif_frames(tmp_path / "progress.gif")
    assert frames == 2 and width == 70 and height == 70 + 28  # with an "epoch N / 2" band on top


def test_face_arithmetic_on_a_known_case():
    z = np.array([[2, 0, 0], [0, 2, 0], [1, 0, 0], [0, 0, 3], [9, 9, 9]], np.float32)
    # mean(a) = (1, 1, 0); minus mean(b) = (1, 0, 0); plus mean(c) = (0, 0, 3)
    assert np.allclose(generate.face_arithmetic(z, [0, 1], [2], [3]), [0, 1, 3])
    assert np.allclose(generate.face_arithmetic(z, [4], [4], [0, 1, 2]), [1, 2 / 3, 0])


def test_arithmetic_sheet_then_figure_and_bad_indices(run, tmp_path, capsys):
    out = str(tmp_path)
    assert generate.main(["arithmetic", run, "--pick-sheet", "--sheet-size", "12", "--seed", "3", "--out", out]) == 0
    saved = np.load(tmp_path / "arithmetic_sheet_seed3.npz")
    assert np.array_equal(saved["z"], data_io.sample_z(12, LATENT, 3))  # same seed, same sheet
    assert saved["faces"].shape == (12, SIZE, SIZE, 3)
    assert (tmp_path / "arithmetic_sheet_seed3.png").exists()

    assert generate.main(["arithmetic", run, "--seed", "3", "--a", "0,1,2", "--b", "3,4", "--c", "11",
                          "--names", "smiling woman,neutral woman,neutral man", "--out", out]) == 0
    figure = cv2.imread(str(tmp_path / "arithmetic_seed3_a0-1-2_minus3-4_plus11.png"))
    assert figure is not None and figure.shape[1] > 6 * SIZE * 2
    assert "warning" not in capsys.readouterr().err

    # a sheet whose faces no longer match the generator (it trained on): the numbers are stale, say so
    np.savez(tmp_path / "stale.npz", z=saved["z"], faces=255 - saved["faces"])
    assert generate.main(["arithmetic", run, "--a", "0", "--b", "1", "--c", "2", "--z-file",
                          str(tmp_path / "stale.npz"), "--out", out]) == 0
    assert "generator.keras has changed" in capsys.readouterr().err

    assert generate.main(["arithmetic", run, "--seed", "3", "--a", "0,12", "--b", "1", "--c", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "face 12 is not on the sheet" in err and len(err.strip().splitlines()) == 1
    assert generate.main(["arithmetic", run, "--a", "x,y", "--b", "1", "--c", "2", "--out", out]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert generate.main(["arithmetic", run, "--a", "1", "--out", out]) == 2
    assert "--pick-sheet" in capsys.readouterr().err


def test_a_generated_face_put_into_the_training_set_is_its_own_nearest_neighbour(run, tmp_path, capsys):
    generator = generate.load_generator(run)
    face = data_io.generate_images(generator, data_io.sample_z(1, LATENT, 0))[0]  # face 0 of seed 0
    train = np.random.default_rng(1).integers(0, 256, (30, SIZE, SIZE, 3), dtype=np.uint8)
    train[17] = face
    train[5] = np.clip(face.astype(int) + 3, 0, 255)  # a near copy: second
    np.save(tmp_path / "train.npy", train)

    index, squared = generate.nearest_neighbours(face[None], train, k=3, chunk=4)  # 4: the top-k crosses chunks
    assert index[0, 0] == 17 and squared[0, 0] == 0 and index[0, 1] == 5
    brute = ((train.reshape(30, -1).astype(float) - face.reshape(-1)) ** 2).sum(1)
    assert np.array_equal(index[0], np.argsort(brute, kind="stable")[:3])
    assert np.allclose(squared[0], np.sort(brute)[:3])

    assert generate.main(["neighbours", run, "--n", "2", "--k", "3", "--data", str(tmp_path / "train.npy"),
                          "--out", str(tmp_path)]) == 0
    assert "(min 0.0)" in capsys.readouterr().out
    figure = cv2.imread(str(tmp_path / "neighbours_seed0.png"))
    assert figure.shape[0] > 2 * SIZE * 2 and figure.shape[1] > 4 * SIZE * 2  # 2 rows of 1 + 3 faces


def test_clear_one_line_errors_with_exit_code_2(run, tmp_path, capsys):
    assert generate.main(["sample", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and len(err.strip().splitlines()) == 1
    assert generate.main(["progress", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err

    (tmp_path / "config.json").write_text(json.dumps({"latent_dim": LATENT, "image_size": SIZE}))
    assert generate.main(["interpolate", str(tmp_path)]) == 2
    assert "no generator" in capsys.readouterr().err
    (tmp_path / "generator.keras").write_bytes(b"not a model")
    assert generate.main(["sample", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a Keras model" in err and len(err.strip().splitlines()) == 1
    assert generate.main(["progress", str(tmp_path)]) == 2
    assert "no samples/epoch_*.png" in capsys.readouterr().err

    assert generate.main(["neighbours", run, "--data", str(tmp_path / "nothing.npy")]) == 2
    assert "no training data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors also exit with 2
        generate.main(["sample", run, "--n", "0"])
    assert exit_info.value.code == 2


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("make, message", [
    (lambda: np.full((12, LATENT), np.nan, np.float32), "NaN, infinite or non-real values"),
    (lambda: np.where(np.eye(12, LATENT) > 0, np.inf, 0).astype(np.float32), "NaN, infinite or non-real values"),
    (lambda: np.ones((12, LATENT), np.complex64), "complex64 z"),
    (lambda: np.zeros((0, LATENT), np.float32), "holds z of shape (0, 8)"),
])
def test_arithmetic_refuses_noise_files_that_are_not_finite_real_z(run, tmp_path, capsys, make, message):
    np.save(tmp_path / "z.npy", make())
    assert generate.main(["arithmetic", run, "--a", "0", "--b", "1", "--c", "2", "--z-file", str(tmp_path / "z.npy"),
                          "--out", str(tmp_path / "out")]) == 2
    assert message in _error_line(capsys)
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith("arithmetic")]


def test_arithmetic_refuses_a_damaged_sheet(run, tmp_path, capsys):
    out = str(tmp_path)
    assert generate.main(["arithmetic", run, "--pick-sheet", "--sheet-size", "12", "--out", out]) == 0
    with np.load(tmp_path / "arithmetic_sheet_seed0.npz") as saved:
        z, faces = saved["z"], saved["faces"]
    np.savez(tmp_path / "arithmetic_sheet_seed0.npz", z=np.where(z > 1, np.nan, z), faces=faces)  # the sheet itself
    assert generate.main(["arithmetic", run, "--a", "0", "--b", "1", "--c", "2", "--out", out]) == 2
    assert "arithmetic_sheet_seed0.npz holds float32 z with NaN" in _error_line(capsys)
    np.savez(tmp_path / "arithmetic_sheet_seed0.npz", z=z, faces=faces[:5])
    assert generate.main(["arithmetic", run, "--a", "0", "--b", "1", "--c", "2", "--out", out]) == 2
    assert "not one uint8 (32, 32, 3) face per z: the sheet is damaged" in _error_line(capsys)


@pytest.mark.parametrize("argv, message", [
    (["sample", "--format", "npy", "--columns", "4"], "--format npy writes no grid"),
    (["sample", "--format", "png", "--scale", "3"], "--format png writes no grid"),
    (["arithmetic", "--pick-sheet", "--z-file", "z.npy"], "give --z-file in a second run"),
    (["arithmetic", "--pick-sheet", "--names", "a,b,c"], "give --names in a second run"),
    (["arithmetic", "--pick-sheet", "--noise", "0.2"], "give --noise in a second run"),
    (["arithmetic", "--a", "0", "--b", "1", "--c", "2", "--z-file", "z.npy", "--sheet-size", "20"],
     "--z-file z.npy brings its own"),
    (["neighbours", "--k", "41"], "--k 41: "),
])
def test_flags_that_would_change_nothing_are_refused(run, tmp_path, capsys, argv, message):
    assert generate.main([argv[0], run, *argv[1:], "--out", str(tmp_path)]) == 2
    assert message in _error_line(capsys)


@pytest.mark.parametrize("argv, what", [
    (["sample", "--n", "3000000", "--format", "grid"], "a grid of 3,000,000 faces"),
    (["interpolate", "--rows", "2000", "--steps", "500"], "2000 walks of 500 steps"),
    (["arithmetic", "--pick-sheet", "--sheet-size", "100000"], "a sheet of 100,000 faces"),
    (["neighbours", "--n", "100000", "--k", "5"], "100000 faces beside 5 neighbours"),
])
def test_pictures_too_large_to_make_in_memory_are_refused_before_any_face(run, tmp_path, capsys, monkeypatch,
                                                                          argv, what):
    monkeypatch.setattr(data_io, "generate_images", lambda *a: pytest.fail("made faces"))
    assert generate.main([argv[0], run, *argv[1:], "--out", str(tmp_path)]) == 2
    assert what in _error_line(capsys) and os.listdir(tmp_path) == []


def test_progress_refuses_a_gif_too_large_to_make(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generate, "MAX_PICTURE_PIXELS", 2_000_000)
    assert generate.main(["progress", run, "--scale", "8", "--out", str(tmp_path)]) == 0  # 2 frames of 560 x 560
    assert generate.main(["progress", run, "--scale", "16", "--out", str(tmp_path / "big")]) == 2
    assert "a GIF of 2 epoch grids would be 2,508,800 pixels" in _error_line(capsys)


def test_sample_streams_any_number_of_faces_in_bounded_memory(run, tmp_path, monkeypatch):
    import tracemalloc
    monkeypatch.setattr(generate, "SAMPLE_CHUNK", 200)
    peaks = {}
    for n in (200, 3000):  # 3000: 9 MB of faces, made and written 200 at a time
        tracemalloc.start()
        try:
            generate.sample(run, n=n, format="npy", out=str(tmp_path / str(n)), seed=4)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    faces = np.load(tmp_path / "3000" / "samples.npy")
    assert faces.shape == (3000, SIZE, SIZE, 3) and peaks[3000] - peaks[200] < faces.nbytes / 10
    generator = generate.load_generator(run)
    np.testing.assert_array_equal(faces, data_io.sample_faces(generator, 3000, seed=4))  # the faces of seed 4
    assert generate.main(["sample", run, "--n", "450", "--seed", "4", "--out", str(tmp_path / "all")]) == 0
    assert np.array_equal(np.load(tmp_path / "all" / "samples.npy"), faces[:450])
    assert np.array_equal(cv2.imread(str(tmp_path / "all" / "sample_0449.png"))[..., ::-1], faces[449])


def test_sample_refuses_what_does_not_fit_on_the_disk_before_writing(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 10 ** 6,
                                                                                   10 ** 6))  # 1 MB free
    monkeypatch.setattr(data_io, "generate_images", lambda *a: pytest.fail("made faces"))
    assert generate.main(["sample", run, "--n", "3000000", "--format", "npy", "--out", str(tmp_path)]) == 2
    assert "3,000,000 faces as --format npy needs about 9.22 GB" in _error_line(capsys)
    assert os.listdir(tmp_path) == []
