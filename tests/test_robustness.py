"""Bad inputs give one clear line (or a reported skip), crashes lose at most the work since the last
checkpoint, and a resumed run continues exactly."""
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from facegan import data_io
import preprocess
from facegan import gan_step
from facegan import history as history_log
from facegan import run_state
import train
from facegan import training_loop
from facegan import run_setup
from conftest import PAPER_RECIPE, ROOT, TINY_TRAIN_FLAGS, flip_a_byte_inside, jpeg_bytes, wait_for_checkpoint


def _folder_with(tmp_path, odd_name, odd_bytes, n_good=4):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(n_good):
        (folder / f"{i:06d}.jpg").write_bytes(jpeg_bytes(seed=i))
    (folder / odd_name).write_bytes(odd_bytes)
    return folder


def _preprocess(tmp_path, source, capsys):
    code = preprocess.main(["--source", str(source), "--out", str(tmp_path / "out" / "x"), "--holdout", "1",
                            "--workers", "1"])
    captured = capsys.readouterr()
    meta = json.loads((tmp_path / "out" / "x.json").read_text()) if code == 0 else None
    return code, meta, captured.err


def _pil_bytes(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_truncated_jpeg_is_skipped(tmp_path, capsys):
    code, meta, _ = _preprocess(tmp_path, _folder_with(tmp_path, "bad.jpg", jpeg_bytes()[:1500]), capsys)
    assert code == 0 and meta["skipped"] == [{"file": "bad.jpg", "reason": "truncated JPEG (no end-of-image marker)"}]


def test_tiny_image_is_skipped_huge_image_is_used(tmp_path, capsys):
    folder = _folder_with(tmp_path, "tiny.jpg", jpeg_bytes(10, 10))
    (folder / "huge.jpg").write_bytes(jpeg_bytes(3000, 2400))
    code, meta, _ = _preprocess(tmp_path, folder, capsys)
    assert code == 0 and [s["file"] for s in meta["skipped"]] == ["tiny.jpg"]
    assert meta["train_count"] + meta["holdout_count"] == 5


@pytest.mark.parametrize("name, make", [
    ("gray.png", lambda: _pil_bytes(Image.new("L", (89, 109), 128), "PNG")),
    ("cmyk.jpg", lambda: _pil_bytes(Image.new("CMYK", (89, 109), (0, 255, 255, 0)), "JPEG")),
    ("alpha.png", lambda: _pil_bytes(Image.new("RGBA", (89, 109), (0, 0, 255, 10)), "PNG")),
])
def test_unusual_colour_formats_become_rgb(tmp_path, capsys, name, make):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}_{name}").write_bytes(make())
    code, meta, _ = _preprocess(tmp_path, folder, capsys)
    assert code == 0 and meta["skipped"] == []
    image = np.load(tmp_path / "out" / "x_train.npy")[0]
    assert image.shape == (64, 64, 3)
    if name.startswith("cmyk"):  # C=0, M=Y=255: red
        assert image[..., 0].mean() > 200 and image[..., 1].mean() < 60
    if name.startswith("alpha"):  # transparent blue: colour kept, alpha dropped
        assert image[..., 2].mean() > 200 and image[..., 0].mean() < 30


def test_images_over_the_pixel_or_byte_limit_are_skipped_unread(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_io, "MAX_IMAGE_PIXELS", 150 * 150, raising=False)
    monkeypatch.setattr(data_io, "MAX_IMAGE_BYTES", 1_000_000)
    # preprocess.py: a picture that declares more pixels than the limit is not decoded
    folder = _folder_with(tmp_path, "huge.jpg", jpeg_bytes(400, 300))
    code, meta, _ = _preprocess(tmp_path, folder, capsys)
    assert code == 0 and [s["file"] for s in meta["skipped"]] == ["huge.jpg"]
    assert "300x400 = 120,000 pixels, over the 22,500-pixel limit" in meta["skipped"][0]["reason"]
    # evaluate.py's image sets: a zip with a member too large in pixels, and one too large in bytes
    source = tmp_path / "faces.zip"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(3):
            archive.writestr(f"{i}.jpg", jpeg_bytes(64, 64, seed=i))
        archive.writestr("huge.jpg", jpeg_bytes(400, 300))
        archive.writestr("bomb.png", bytes(1_500_000))  # deflates to about a thousandth of that
    capsys.readouterr()
    assert len(data_io.load_image_array(str(source), 32)) == 3
    note = capsys.readouterr().out
    assert "skipped 2 of the files" in note and "over the 22,500-pixel limit" in note and "1,000,000-byte" in note


def test_folder_of_non_images_is_an_error(tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    code, _, err = _preprocess(tmp_path, folder, capsys)
    assert code == 2 and "no .jpg/.png images" in err


def test_truncated_zip_is_an_error(tmp_path, capsys):
    source = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for i in range(5):
            archive.writestr(f"img_align_celeba/{i:06d}.jpg", jpeg_bytes(seed=i))
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    code, _, err = _preprocess(tmp_path, source, capsys)
    assert code == 2 and "zip" in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_is_one_line_and_leaves_nothing(tmp_path, capsys):
    source = _folder_with(tmp_path, "extra.jpg", jpeg_bytes())
    (tmp_path / "a_file").write_text("not a folder")
    code = preprocess.main(["--source", str(source), "--out", str(tmp_path / "a_file" / "x"), "--holdout", "1",
                            "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


def test_disk_full_while_writing_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    source = _folder_with(tmp_path, "extra.jpg", jpeg_bytes())
    real_save = np.save

    def full_disk(f, array, *a, **k):
        real_save(f, array[:1], *a, **k)  # a part gets written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "save", full_disk)
    code, _, err = _preprocess(tmp_path, source, capsys)
    assert code == 2 and "No space left on device" in err
    assert os.listdir(tmp_path / "out") == []


def test_resume_with_a_different_latent_size_is_refused(tmp_path, tiny_dataset, capsys):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "1",
                       *TINY_TRAIN_FLAGS]) == 0
    assert train.main(["--resume", str(tmp_path / "run"), "--latent-dim", "64"]) == 2
    assert "--latent-dim 64 differs from the run's 100" in capsys.readouterr().err


def test_resume_on_data_of_another_size_is_refused(tmp_path, tiny_dataset, capsys):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "1",
                       *TINY_TRAIN_FLAGS]) == 0
    np.save(tiny_dataset, np.zeros((64, 64, 64, 3), np.uint8))  # the data file was replaced by 64 px images
    assert train.main(["--resume", str(tmp_path / "run"), "--epochs", "2"]) == 2
    assert "trained at 32 px" in capsys.readouterr().err


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_dataset, capsys):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "2",
                       *TINY_TRAIN_FLAGS, *PAPER_RECIPE]) == 0
    newest = run_state.latest_checkpoint(str(tmp_path / "run"))
    with open(newest, "r+b") as f:
        f.truncate(1000)
    assert train.main(["--resume", str(tmp_path / "run"), "--epochs", "3"]) == 0
    assert "falling back to the previous intact checkpoint" in capsys.readouterr().out
    assert len(np.load(tmp_path / "run" / "d_losses.npy")) == 3


def test_generator_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "generator.keras"
    path.write_text("definitely not a model")
    with pytest.raises(data_io.DataError, match="is not a Keras model"):
        data_io.load_keras_model(str(path))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_dataset, capsys, monkeypatch):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "1",
                       *TINY_TRAIN_FLAGS]) == 0
    good = run_state.latest_checkpoint(str(tmp_path / "run"))
    real_build = gan_step.build_train_step

    def exploding_step(*args, **kwargs):
        step = real_build(*args, **kwargs)
        return lambda real: {**step(real), "d_loss": float("nan")}
    monkeypatch.setattr(gan_step, "build_train_step", exploding_step)
    assert train.main(["--resume", str(tmp_path / "run"), "--epochs", "3"]) == training_loop.EXIT_DIVERGED
    message = _last_line(capsys.readouterr().err)
    assert "training diverged: non-finite loss at epoch 2 step 1" in message and good in message
    assert run_state.latest_checkpoint(str(tmp_path / "run")) == good
    assert len(np.load(tmp_path / "run" / "d_losses.npy")) == 1


def test_collapse_guard_stops_when_d_wins_for_too_long(tmp_path, tiny_dataset, capsys, monkeypatch):
    real_build = gan_step.build_train_step

    def collapsed_step(*args, **kwargs):
        step = real_build(*args, **kwargs)
        return lambda real: {**step(real), "d_real": 0.999, "d_fake": 0.001}  # D(x) = 0.999, D(G(z)) = 0.001
    monkeypatch.setattr(gan_step, "build_train_step", collapsed_step)
    code = train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "3",
                       "--collapse-steps", "3", *TINY_TRAIN_FLAGS])
    assert code == training_loop.EXIT_DIVERGED and "discriminator collapse" in capsys.readouterr().err


# ----- real processes: kill -9, Ctrl-C ---------------------------------------------------------------------

def _start(args):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path, tiny_dataset):
    flags = ["--data", tiny_dataset, *TINY_TRAIN_FLAGS, *PAPER_RECIPE, "--max-steps", "4", "--checkpoint-every",
             "1", "--precision", "fp32"]
    assert train.main([*flags, "--out", str(tmp_path), "--name", "straight", "--epochs", "3"]) == 0
    # The child reports the checkpoint after step 5 and then hangs in step 6, so kill -9 always lands
    # mid-run (mid-epoch 2), however fast the machine.
    code = f"""
import sys, threading
from facegan import run_state
import train
real_save_checkpoint = run_state.save_checkpoint
def save_checkpoint(run_dir, variables, history, keep):
    path = real_save_checkpoint(run_dir, variables, history, keep)
    if len(history["d_loss"]) == 5:
        print("checkpoint 5 saved", flush=True)
        threading.Event().wait()
    return path
run_state.save_checkpoint = save_checkpoint
sys.exit(train.main({[*flags, "--out", str(tmp_path), "--name", "killed", "--epochs", "3"]!r}))
"""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "checkpoint 5 saved" in line:  # after the progress bar's \r-separated updates
                break
        assert process.poll() is None, "training ended before step 5"
    finally:  # never leave the blocked child behind
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert train.main(["--resume", str(tmp_path / "killed")]) == 0
    killed, straight = np.load(tmp_path / "killed" / "steps.npz"), np.load(tmp_path / "straight" / "steps.npz")
    assert len(killed["d_loss"]) == len(straight["d_loss"]) == 12  # no gap, no duplicate
    np.testing.assert_array_equal(killed["g_loss"], straight["g_loss"])
    np.testing.assert_array_equal(np.load(tmp_path / "killed" / "d_losses.npy"),
                                  np.load(tmp_path / "straight" / "d_losses.npy"))


def test_ctrl_c_and_sigterm_checkpoint_and_exit_cleanly(tmp_path, tiny_dataset):
    # both signals at once, one process each (their start-ups overlap on two cores)
    processes = {sig: _start(["--data", tiny_dataset, *TINY_TRAIN_FLAGS, *PAPER_RECIPE, "--max-steps", "4", "--out",
                              str(tmp_path), "--name", sig.name, "--epochs", "1000", "--precision", "fp32"])
                 for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig, process in processes.items():
            run_dir = tmp_path / sig.name
            wait_for_checkpoint(run_dir, 4, process)
            process.send_signal(sig)
            output, _ = process.communicate(timeout=60)
            assert process.returncode == training_loop.EXIT_INTERRUPTED, sig.name
            assert "Traceback" not in output and f"python train.py --resume {run_dir}" in output
            newest = run_state.latest_checkpoint(str(run_dir))
            assert int(os.path.basename(newest)[5:14]) > 4  # the checkpoint taken at the signal, mid-epoch
    finally:  # a failure above must not leave the other 1000-epoch run going
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_corrupt_zip_member_is_skipped_and_reported(tmp_path, capsys):
    source = tmp_path / "faces.zip"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(4):
            archive.writestr(f"{i:06d}.jpg", jpeg_bytes(seed=i))
    raw = bytearray(source.read_bytes())
    offset = raw.index(jpeg_bytes(seed=2)) + 200  # flip bytes inside the third image: its CRC check fails
    raw[offset:offset + 50] = bytes(50)
    source.write_bytes(bytes(raw))
    code, meta, _ = _preprocess(tmp_path, source, capsys)
    assert code == 0 and [s["file"] for s in meta["skipped"]] == ["000002.jpg"]
    assert "unreadable" in meta["skipped"][0]["reason"]


def test_dry_run_checks_every_stage_and_leaves_nothing(tmp_path, tiny_dataset, capsys):
    assert train.main(["--dry-run", "--data", tiny_dataset, "--g-width", "8", "--d-width", "8",
                       "--batch-size", "16", "--out", str(tmp_path / "outputs")]) == 0
    assert "dry run OK" in capsys.readouterr().out
    assert not (tmp_path / "outputs").exists()


# ----- train.py: the data it trains on, what --resume keeps, honours and refuses ------------------------------

def _one_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _last_line(err):
    """The message a run ends with on stderr, after its progress bars."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_faces):
    """A tiny run that finished its 2 epochs (2 steps each), trained with --lr 1e-3 on a preprocess.py-style
    dataset (arrays and the JSON that describes them)."""
    folder = tmp_path_factory.mktemp("finished")
    data_io.save_dataset(str(folder / "faces"), tiny_faces[:64], tiny_faces[64:], {})
    assert train.main(["--data", str(folder / "faces_train.npy"), "--out", str(folder), "--name", "run",
                       "--epochs", "2", "--lr", "1e-3", *TINY_TRAIN_FLAGS]) == 0
    return folder / "run"


def _copy_run(finished_run, tmp_path):
    """A copy of finished_run with its own copy of the dataset; returns (run, dataset prefix)."""
    run = shutil.copytree(finished_run, tmp_path / "run")
    for name in ("faces_train.npy", "faces_holdout.npy", "faces.json"):
        shutil.copy(finished_run.parent / name, tmp_path / name)
    config = json.loads((run / "config.json").read_text())
    config.update(data=str(tmp_path / "faces_train.npy"), holdout=str(tmp_path / "faces_holdout.npy"))
    (run / "config.json").write_text(json.dumps(config))
    return run, str(tmp_path / "faces")


def test_resume_refuses_changed_data_and_continues_honestly_when_allowed(finished_run, tmp_path, tiny_faces,
                                                                          capsys):
    run, prefix = _copy_run(finished_run, tmp_path)
    data_io.save_dataset(prefix, tiny_faces[:16], tiny_faces[64:], {})  # preprocess.py again, a smaller --limit
    config_before = (run / "config.json").read_text()
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 2
    message = _one_line(capsys.readouterr().err)
    assert "16 images" in message and "64" in message and "--allow-data-change" in message
    assert (run / "config.json").read_text() == config_before
    assert train.main(["--resume", str(run), "--epochs", "3", "--allow-data-change"]) == 0
    history = json.loads((run / "history.json").read_text())
    steps = np.load(run / "steps.npz")["d_loss"]
    assert len(steps) == 5 and history["epoch_steps"] == [2, 2, 1]  # the new data gives one step per epoch
    assert np.load(run / "d_losses.npy")[2] == pytest.approx(steps[4])  # epoch 3's mean is its own step
    assert all(speed > 0 for speed in history["images_per_second"])
    config = json.loads((run / "config.json").read_text())
    assert config["train_count"] == 16 and config["steps_per_epoch"] == 1 and config["epochs"] == 3
    assert config["data_fingerprint"] == data_io.array_fingerprint(tiny_faces[:16])


def test_resume_of_a_run_without_a_data_fingerprint_warns_once_and_continues(finished_run, tmp_path, capsys):
    run, _ = _copy_run(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    del config["data_fingerprint"]
    (run / "config.json").write_text(json.dumps(config))
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "could not be verified" in warnings[0]
    assert len(np.load(run / "d_losses.npy")) == 3
    assert "data_fingerprint" in json.loads((run / "config.json").read_text())  # checked from now on


def test_resume_refuses_data_smaller_than_one_batch_even_when_changes_are_allowed(finished_run, tmp_path,
                                                                                 tiny_faces, capsys):
    run, prefix = _copy_run(finished_run, tmp_path)
    data_io.save_dataset(prefix, tiny_faces[:8], tiny_faces[64:], {})
    assert train.main(["--resume", str(run), "--epochs", "3", "--allow-data-change"]) == 2
    assert "fewer than one batch of 16" in _one_line(capsys.readouterr().err)


def test_a_dataset_that_is_not_the_one_its_json_describes_is_refused(tmp_path, tiny_faces, capsys, monkeypatch):
    data_io.save_dataset(str(tmp_path / "faces"), tiny_faces[:64], tiny_faces[64:], {})
    np.save(tmp_path / "faces_train.npy", tiny_faces[:48])  # replaced behind preprocess.py's back
    monkeypatch.setattr(gan_step, "build_models", lambda *a, **k: pytest.fail("built models for bad data"))
    assert train.main(["--data", str(tmp_path / "faces_train.npy"), "--out", str(tmp_path / "outputs"),
                       *TINY_TRAIN_FLAGS]) == 2
    assert "is not the array" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "outputs").exists()


def test_the_training_file_is_never_recorded_as_its_own_holdout(tmp_path, tiny_faces, capsys):
    np.save(tmp_path / "faces.npy", tiny_faces[:64])
    flags = ["--out", str(tmp_path / "outputs"), "--batch-size", "16"]
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", str(tmp_path / "faces.npy"), *flags]))
    assert config["holdout"] is None and "--real" in capsys.readouterr().out
    np.save(tmp_path / "same_train.npy", tiny_faces[:64])  # a _holdout.npy beside it, identical to the training set
    np.save(tmp_path / "same_holdout.npy", tiny_faces[:64])
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", str(tmp_path / "same_train.npy"), *flags]))
    assert config["holdout"] is None and "--real" in capsys.readouterr().out
    np.save(tmp_path / "same_holdout.npy", np.concatenate([tiny_faces[64:], tiny_faces[[3]]]))  # one training face
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", str(tmp_path / "same_train.npy"), *flags]))
    assert config["holdout"] is None and "1 of its 33 images is in the training data" in capsys.readouterr().out


@pytest.mark.parametrize("holdout, message", [("faces.npy", "is the training data"),
                                              ("missing.npy", "no held-out images at"),
                                              ("shuffled.npy", "20 of its 20 images are in the training data"),
                                              ("small.npy", "holds 16 px images, not 32 px")])
def test_a_wrong_holdout_flag_is_refused(tmp_path, tiny_faces, capsys, holdout, message):
    np.save(tmp_path / "faces.npy", tiny_faces[:64])
    np.save(tmp_path / "shuffled.npy", tiny_faces[np.random.default_rng(0).permutation(64)[:20]])
    np.save(tmp_path / "small.npy", tiny_faces[64:, ::2, ::2])
    assert train.main(["--data", str(tmp_path / "faces.npy"), "--holdout", str(tmp_path / holdout),
                       "--out", str(tmp_path / "outputs"), *TINY_TRAIN_FLAGS]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "outputs").exists()


def test_divergence_names_the_checkpoint_that_exists(tmp_path, tiny_dataset, capsys, monkeypatch):
    real_build = gan_step.build_train_step

    def exploding_step(*args, **kwargs):
        step = real_build(*args, **kwargs)
        return lambda real: {**step(real), "d_loss": float("nan")}
    monkeypatch.setattr(gan_step, "build_train_step", exploding_step)
    # a new run that diverges before its first checkpoint: nothing to resume, nothing left behind
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "run",
                       *TINY_TRAIN_FLAGS]) == training_loop.EXIT_DIVERGED
    message = _last_line(capsys.readouterr().err)
    assert "no checkpoint was saved" in message and "--resume" not in message
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "1"], "has already trained 2 epochs"),
    (["--max-steps", "1"], "--max-steps 1 differs from the run's 2"),
    (["--max-steps", "0"], "--max-steps 0 differs from the run's 2"),
    (["--lr", "2e-4"], "--lr 0.0002 differs from the run's 0.001"),  # the default, given: not ignored
    (["--n-samples", "8"], "--n-samples 8 differs from the run's 16"),
    (["--demo"], "--demo True differs from the run's False"),
    (["--out", "elsewhere"], "--out and --name name a new run"),
    (["--name", "other"], "--out and --name name a new run"),
])
def test_resume_refuses_flags_it_cannot_honour_and_changes_nothing(finished_run, flags, message, capsys):
    config_before = (finished_run / "config.json").read_text()
    epochs = [] if flags[0] == "--epochs" else ["--epochs", "3"]
    assert train.main(["--resume", str(finished_run), *epochs, *flags]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert (finished_run / "config.json").read_text() == config_before


def test_resume_refuses_other_data_given_with_data(finished_run, tmp_path, tiny_faces, capsys):
    np.save(tmp_path / "other.npy", tiny_faces[32:])
    assert train.main(["--resume", str(finished_run), "--epochs", "3", "--data", str(tmp_path / "other.npy")]) == 2
    assert "--allow-data-change" in _one_line(capsys.readouterr().err)


def test_resume_of_a_finished_run_has_nothing_to_do(finished_run, capsys):
    before = {name: os.path.getmtime(finished_run / name) for name in os.listdir(finished_run)}
    assert train.main(["--resume", str(finished_run)]) == 0
    assert "already trained all its 2 epochs" in capsys.readouterr().out
    assert {name: os.path.getmtime(finished_run / name) for name in os.listdir(finished_run)} == before


def test_resume_honours_and_records_more_epochs_and_checkpoint_flags(finished_run, tmp_path):
    run, _ = _copy_run(finished_run, tmp_path)
    assert train.main(["--resume", str(run), "--epochs", "3", "--checkpoint-every", "1",
                       "--keep-checkpoints", "1", "--collapse-steps", "0"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["checkpoint_every"], config["keep_checkpoints"], config["collapse_steps"]) == (
        3, 1, 1, 0)
    assert os.listdir(run / "checkpoints") == ["step_000000006.npz"]


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "config.json").write_text('{"epochs": 2, "da'), "cannot read"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "not an object"),
    (lambda run: shutil.rmtree(run), "no such run directory"),
    (lambda run: os.remove(run / "fixed_noise.npy"), "fixed_noise.npy"),
    (lambda run: (run / "fixed_noise.npy").write_bytes(b"not an array"), "fixed_noise.npy"),
    (lambda run: (run / "config.json").write_text(json.dumps(
        {**json.loads((run / "config.json").read_text()), "batch_size": "16"})), "'batch_size'"),
    (lambda run: (run / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k != "data"})), "'data'"),
])
def test_resume_of_a_damaged_run_is_one_line(finished_run, tmp_path, capsys, damage, message):
    run, _ = _copy_run(finished_run, tmp_path)
    damage(run)
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 2
    assert message in _one_line(capsys.readouterr().err)


def test_output_locations_are_checked_before_training_and_nothing_is_left(tmp_path, tiny_dataset, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(gan_step, "build_models", lambda *a, **k: pytest.fail("built models before the checks"))
    (tmp_path / "file").write_text("in the way")
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "file" / "x"), *TINY_TRAIN_FLAGS]) == 2
    assert "cannot write to" in _one_line(capsys.readouterr().err)
    (tmp_path / "outputs" / "notes").mkdir(parents=True)  # a folder of something else, not a run
    (tmp_path / "outputs" / "notes" / "todo.txt").write_text("keep me")
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "notes",
                       *TINY_TRAIN_FLAGS]) == 2
    assert "is not empty" in _one_line(capsys.readouterr().err)
    assert os.listdir(tmp_path / "outputs" / "notes") == ["todo.txt"]
    assert sorted(os.listdir(tmp_path)) == sorted(["file", "outputs", "tiny_train.npy", "tiny_holdout.npy"])


def test_an_existing_run_is_never_overwritten_by_a_new_one(finished_run, capsys):
    config_before = (finished_run / "config.json").read_text()
    data = json.loads(config_before)["data"]
    assert train.main(["--data", data, "--out", str(finished_run.parent), "--name", "run", *TINY_TRAIN_FLAGS]) == 2
    assert "already holds a run; use --resume" in _one_line(capsys.readouterr().err)
    assert (finished_run / "config.json").read_text() == config_before


@pytest.mark.parametrize("make, message", [
    (lambda path: path.write_bytes(b""), "not a readable .npy array"),
    (lambda path: np.save(path, np.zeros((0, 32, 32, 3), np.uint8)), "only 0 training images"),
    (lambda path: np.save(path, np.zeros((8, 32, 32, 3), np.uint8)), "fewer than one batch of 16"),
    (lambda path: np.save(path, np.zeros((20, 32, 32, 3), np.float32)), "expected uint8"),
    (lambda path: np.save(path, np.zeros((20, 48, 48, 3), np.uint8)), "32, 64 or 128"),
])
def test_unusable_training_data_is_one_line(tmp_path, capsys, make, message):
    make(tmp_path / "x.npy")
    assert train.main(["--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "outputs"),
                       *TINY_TRAIN_FLAGS]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "outputs").exists()


def _edit_config(run, **changes):
    """Hand-edit a run's config.json: set keys, or remove those given as None."""
    config = json.loads((run / "config.json").read_text())
    config.update(changes)
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


@pytest.mark.parametrize("changes, message", [
    ({"precision": "fp64"}, "'precision' is 'fp64', not one of fp32, bf16, fp16"),
    ({"image_size": 48}, "'image_size' is 48, not an image size of 32, 64 or 128"),
    ({"lr": -1}, "'lr' is -1, not a valid --lr"),
    ({"batch_size": 0}, "'batch_size' is 0, not an integer >= 1"),
    ({"ema": 1.5}, "'ema' is 1.5, not a valid --ema"),
    ({"loss": "wgan"}, "'loss' is 'wgan', not one of ('bce', 'hinge', 'lsgan', 'rpgan')"),
    ({"preset": "fancy"}, "'preset' is 'fancy'"),
    ({"diffaug": "rotate"}, "'diffaug' is 'rotate', not a comma-separated list of color, translation, cutout"),
    ({"spectral_norm": "yes"}, "'spectral_norm' is 'yes', not true or false"),
    ({"latent_dim": None}, "has no 'latent_dim'"),
    ({"steps_per_epoch": None}, "has no 'steps_per_epoch'"),
])
def test_resume_of_a_hand_edited_config_names_the_file_and_key(finished_run, tmp_path, capsys, changes, message):
    run, _ = _copy_run(finished_run, tmp_path)
    _edit_config(run, **changes)
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(run / "config.json") in line and message in line


def test_resume_with_damaged_fixed_noise_is_one_line(finished_run, tmp_path, capsys):
    run, _ = _copy_run(finished_run, tmp_path)
    np.save(run / "fixed_noise.npy", np.full((16, 100), np.nan, np.float32))  # grids of black faces otherwise
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 2
    assert "fixed_noise.npy holds NaN or infinite values" in _one_line(capsys.readouterr().err)


def test_a_flipped_byte_in_the_newest_checkpoint_falls_back_and_resumes_bit_exactly(tmp_path, tiny_dataset, capsys):
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), *TINY_TRAIN_FLAGS, *PAPER_RECIPE, "--precision", "fp32"]
    assert train.main([*flags, "--name", "straight", "--epochs", "3"]) == 0
    assert train.main([*flags, "--name", "damaged", "--epochs", "2"]) == 0
    flip_a_byte_inside(tmp_path / "damaged" / "checkpoints" / "step_000000004.npz")
    capsys.readouterr()
    assert train.main(["--resume", str(tmp_path / "damaged"), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "step_000000004.npz: Bad CRC-32 for file 'g/0000.npy'; falling back to the previous intact " \
           "checkpoint, step_000000002.npz" in out and "resuming" in out
    straight, damaged = np.load(tmp_path / "straight" / "steps.npz"), np.load(tmp_path / "damaged" / "steps.npz")
    for key in history_log.STEP_KEYS:  # epoch 2 trained again from step 2, exactly as the first time
        np.testing.assert_array_equal(damaged[key], straight[key])


def test_no_intact_checkpoint_is_one_line(finished_run, tmp_path, capsys):
    run, _ = _copy_run(finished_run, tmp_path)
    names = run_state.checkpoint_names(str(run))
    flip_a_byte_inside(run / "checkpoints" / names[-1], "d/0001.npy")
    with open(run / "checkpoints" / names[0], "r+b") as f:
        f.truncate(1000)
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"no intact checkpoint in {run / 'checkpoints'}" in line and "Bad CRC-32 for file 'd/0001.npy'" in line


def test_a_checkpoint_with_other_variables_than_the_model_falls_back(finished_run, tmp_path, capsys):
    run, _ = _copy_run(finished_run, tmp_path)
    newest = run / "checkpoints" / run_state.checkpoint_names(str(run))[-1]
    with np.load(newest) as saved:
        arrays = dict(saved)
    arrays["g/0000"] = arrays["g/0000"].astype(np.float64)  # right shape, wrong dtype
    np.savez(newest, **arrays)
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    assert "g/0000 is float64" in capsys.readouterr().out


def test_a_checkpoint_saved_before_ada_and_the_memorisation_signal_is_intact():
    history = history_log.new_history()
    for key in history_log.STEP_KEYS:
        history[key] = [0.5, 0.6]
    legacy = {k: v for k, v in history.items()
              if k not in ("ada_p", "ada_p_epoch", "d_holdout_accuracy", "d_train_accuracy")}
    history_log.check_history(legacy, "a checkpoint's history", per_step=True)  # no error: it had no ADA
    filled = history_log.fill_legacy_history(legacy, steps_per_epoch=2)
    assert filled["ada_p"] == [0.0, 0.0] and filled["d_holdout_accuracy"] == []
