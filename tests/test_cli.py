"""Every script: wrong flags are refused when parsed, expected failures are one line on stderr with exit code
2 (130 for Ctrl-C), and an unusable output location is refused before any work."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facegan import cli
from facegan import data_io
import evaluate
from facegan import evaluation
from facegan import scoring
import generate
import models
import preprocess
import random_baseline

LATENT, SIZE = 8, 32


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("main, argv, message", [
    (random_baseline.main, ["--n", "-1"], "--n: must be >= 1, got -1"),
    (random_baseline.main, ["--n", "0"], "--n: must be >= 1, got 0"),
    (random_baseline.main, ["--size", "0"], "--size: must be between 8 and 1024, got 0"),
    (random_baseline.main, ["--seed", "-3"], "--seed: must be between 0 and 4294967295, got -3"),
    (random_baseline.main, ["--data", "x.npy"], "--data is the reference of --kind gaussian"),
    (preprocess.main, ["--source", "x", "--workers", "-1"], "--workers: must be between 0 and 256, got -1"),
    (preprocess.main, ["--source", "x", "--limit", "ten"], "--limit: 'ten' is not an integer"),
    (evaluate.main, ["run", "--n", "0"], "--n: must be >= 20, got 0"),
    (generate.main, ["sample", "run", "--scale", "0.01"], "--scale: must be between 0.1 and 16, got 0.01"),
    (generate.main, ["arithmetic", "run", "--noise", "nan"], "--noise: must be a finite number, got 'nan'"),
    (generate.main, ["interpolate", "run", "--steps", "1"], "--steps: must be >= 2, got 1"),
])
def test_bad_numbers_are_refused_when_parsed(main, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("error, message, code", [
    (cli.UserError("no such run"), "error: no such run", 2),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.npy"), "error: disk full: /data/x.npy:", 2),
    (PermissionError(errno.EACCES, "Permission denied", "/data"), "error: permission denied: /data:", 2),
    (KeyboardInterrupt(), "interrupted", 130),
])
def test_main_wrapper_turns_expected_failures_into_one_line(error, message, code, capsys):
    @cli.main_wrapper
    def main(argv=None):
        raise error
    assert main([]) == code
    assert message in _one_line(capsys.readouterr().err)


def test_output_check_makes_folders_and_leaves_none_when_it_fails(tmp_path):
    assert cli.check_output_folder(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(cli.UserError, match="cannot write to"):
        cli.check_output_folder(str(tmp_path / "file" / "sub"))
    with pytest.raises(cli.UserError, match="a file, not a folder"):
        cli.check_output_folder(str(tmp_path / "file"))


def test_baseline_with_unwritable_out_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "file").write_text("in the way")
    assert random_baseline.main(["--n", "4", "--out", str(tmp_path / "file" / "rb")]) == 2
    assert "cannot write to" in _one_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_gaussian_baseline_refuses_an_empty_reference(tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 32, 32, 3), np.uint8))
    code = random_baseline.main(["--kind", "gaussian", "--data", str(tmp_path / "empty.npy"), "--size", "32",
                                 "--out", str(tmp_path / "rb")])
    assert code == 2 and "no images" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "rb").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as train.py leaves it, made by hand: 32 px, 8-d noise, width-8 G and D."""
    run = tmp_path_factory.mktemp("run")
    models.build_generator(latent_dim=LATENT, image_size=SIZE, width=8).save(run / "generator.keras")
    models.build_discriminator(image_size=SIZE, width=8).save(run / "discriminator.keras")
    faces = np.random.default_rng(0).integers(0, 256, (80, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(run / "train.npy", faces[:40])
    np.save(run / "holdout.npy", faces[40:])
    np.save(run / "d_losses.npy", np.ones(1, np.float32))
    np.save(run / "g_losses.npy", np.ones(1, np.float32))
    (run / "config.json").write_text(json.dumps({"latent_dim": LATENT, "image_size": SIZE, "epochs": 1,
                                                  "data": str(run / "train.npy"),
                                                  "holdout": str(run / "holdout.npy")}))
    return run


def test_evaluate_with_a_damaged_config_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"image_size": 32, "da')
    assert evaluate.main([str(tmp_path), "--no-quality"]) == 2
    assert "cannot read" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("real", ["train.npy", "copy.npy", None])
def test_evaluate_refuses_real_faces_that_are_the_training_data(run, tmp_path, capsys, real):
    np.save(tmp_path / "copy.npy", np.load(run / "train.npy"))
    argv = [str(run), "--no-quality", "--out", str(tmp_path / "eval")]
    if real is None:  # a run that recorded its training file as its holdout
        config = json.loads((run / "config.json").read_text())
        (tmp_path / "run").mkdir()
        for name in os.listdir(run):
            os.symlink(run / name, tmp_path / "run" / name)
        os.remove(tmp_path / "run" / "config.json")
        (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "holdout": config["data"]}))
        argv[0] = str(tmp_path / "run")
    else:
        argv += ["--real", str(run / real if real == "train.npy" else tmp_path / real)]
    assert evaluate.main(argv) == 2
    message = _one_line(capsys.readouterr().err)
    assert "the training data" in message and "--real" in message
    assert not (tmp_path / "eval").exists()


def _other_size_folder(folder):
    folder.mkdir()
    for i in range(20):
        data_io.save_png(str(folder / f"{i:03d}.png"), np.full((2 * SIZE, 2 * SIZE, 3), 10 * i, np.uint8))
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda train, held, tmp: train[np.random.default_rng(1).permutation(40)[:30]],
     "30 of its 30 images are in the training data"),
    (lambda train, held, tmp: np.concatenate([held[:30], train[[7, 3]]])[::-1],
     "2 of its 32 images are in the training data"),
    (lambda train, held, tmp: held[:, ::2, ::2], "holds 16 px images, not 32 px"),
    (lambda train, held, tmp: _other_size_folder(tmp / "big"), "is 64x64 px, not 32x32"),
], ids=["shuffled subset", "two mixed in", "another size", "a folder of another size"])
def test_evaluate_refuses_real_faces_that_are_not_held_out(run, tmp_path, capsys, quick_judge, make, message):
    real = make(np.load(run / "train.npy"), np.load(run / "holdout.npy"), tmp_path)
    if isinstance(real, np.ndarray):
        np.save(tmp_path / "real.npy", real)
        real = tmp_path / "real.npy"
    assert evaluate.main([str(run), "--real", str(real), "--no-quality", "--n", "20",
                          "--out", str(tmp_path / "eval")]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("count", [0, 1])
def test_evaluate_refuses_a_system_too_small_to_score_before_scoring(run, tmp_path, capsys, monkeypatch, count):
    np.save(tmp_path / "few.npy", np.zeros((count, SIZE, SIZE, 3), np.uint8))
    monkeypatch.setattr(scoring, "judge_accuracy", lambda *a, **k: pytest.fail("scored before checking"))
    assert evaluate.main([str(run), f"few:{tmp_path / 'few.npy'}", "--no-quality", "--n", "20",
                          "--out", str(tmp_path / "eval")]) == 2
    assert f"holds {count} image(s); a system needs at least 10" in _one_line(capsys.readouterr().err)


def test_evaluate_reads_the_loss_files_before_scoring(run, tmp_path, capsys, monkeypatch):
    import shutil
    broken = shutil.copytree(run, tmp_path / "broken")
    (broken / "d_losses.npy").write_bytes(b"\x93NUMPY cut off")
    monkeypatch.setattr(scoring, "judge_accuracy", lambda *a, **k: pytest.fail("scored before checking"))
    assert evaluate.main([str(broken), "--no-quality", "--n", "20", "--out", str(tmp_path / "eval")]) == 2
    assert "d_losses.npy is not a readable .npy array" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("second_size, snapshot_size, message", [
    (2 * SIZE, SIZE, "makes 64 px images and"),   # another run's config
    (SIZE, 2 * SIZE, "makes 64 px images; the curve is at 32 px"),  # a snapshot of another size
])
def test_curve_checks_every_run_and_snapshot_before_scoring(run, tmp_path, capsys, monkeypatch, second_size,
                                                            snapshot_size, message):
    import shutil
    for name, size, made in (("a", SIZE, SIZE), ("b", second_size, snapshot_size)):
        (tmp_path / name / "snapshots").mkdir(parents=True)
        if made == SIZE:
            shutil.copy(run / "generator.keras", tmp_path / name / "snapshots" / "generator_epoch_001.keras")
        else:
            models.build_generator(latent_dim=LATENT, image_size=made, width=8).save(
                tmp_path / name / "snapshots" / "generator_epoch_001.keras")
        config = {**json.loads((run / "config.json").read_text()), "image_size": size, "steps_per_epoch": 1,
                  "batch_size": 16}
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(scoring, "load_fid_engines", lambda path: ([], "none here"))
    monkeypatch.setattr(data_io, "sample_faces", lambda *a, **k: pytest.fail("sampled before checking"))
    assert evaluate.main([str(tmp_path / "a"), str(tmp_path / "b"), "--curve", "--n", "20",
                          "--out", str(tmp_path / "eval")]) == 2
    assert message in _one_line(capsys.readouterr().err)


def test_evaluate_refuses_a_discriminator_given_as_a_generator(run, tmp_path, capsys):
    code = evaluate.main([str(run), f"d:{run / 'discriminator.keras'}", "--n", "20", "--no-quality",
                          "--out", str(tmp_path / "eval")])
    assert code == 2 and "not a generator" in _one_line(capsys.readouterr().err)


def test_evaluate_checks_its_output_folder_before_scoring(run, tmp_path, capsys, monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before checking the output folder")
    monkeypatch.setattr(scoring, "judge_accuracy", no_scoring)
    monkeypatch.setattr(evaluation, "resolve_system", no_scoring)
    (tmp_path / "file").write_text("in the way")
    assert evaluate.main([str(run), "--out", str(tmp_path / "file"), "--no-quality"]) == 2
    assert "cannot write to" in _one_line(capsys.readouterr().err)


def test_generate_checks_its_output_folder_before_generating(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_io, "generate_images", lambda *a, **k: pytest.fail("generated before checking --out"))
    (tmp_path / "file").write_text("in the way")
    assert generate.main(["sample", str(run), "--out", str(tmp_path / "file" / "x")]) == 2
    assert "cannot write to" in _one_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("command", [["sample", "--n", "4"], ["interpolate", "--rows", "2", "--steps", "3"],
                                     ["progress"], ["arithmetic", "--pick-sheet", "--sheet-size", "4"],
                                     ["neighbours", "--n", "2", "--k", "2"]])
def test_generate_at_the_smallest_scale_writes_pictures(run, tmp_path, command):
    (run / "samples").mkdir(exist_ok=True)
    generate.data_io.save_png(str(run / "samples" / "epoch_001.png"), np.zeros((70, 70, 3), np.uint8))
    assert generate.main([command[0], str(run), *command[1:], "--scale", "0.1", "--out", str(tmp_path)]) == 0
    assert os.listdir(tmp_path)


@pytest.mark.parametrize("values", [np.full((4, 8, 8, 3), np.nan, np.float32), np.full((4, 8, 8, 3), 200.0)])
def test_a_float_image_array_outside_the_unit_range_is_refused(tmp_path, values):
    np.save(tmp_path / "x.npy", values)
    with pytest.raises(cli.UserError, match="outside"):
        generate.data_io.load_image_array(str(tmp_path / "x.npy"))


def _run_with_config(run, folder, **changes):
    """A run directory like `run` (its files linked) whose config.json is hand-edited: keys set, or removed when
    given as None."""
    folder.mkdir()
    for name in os.listdir(run):
        if name != "config.json":
            os.symlink(run / name, folder / name)
    config = {**json.loads((run / "config.json").read_text()), **changes}
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return str(folder)


@pytest.mark.parametrize("command, changes, message", [
    (["evaluate"], {"image_size": "32"}, "'image_size' is '32', not an image size of 32, 64 or 128"),
    (["evaluate"], {"precision": "fp64"}, "'precision' is 'fp64', not one of fp32, bf16, fp16"),
    (["evaluate"], {"image_size": None}, "has no 'image_size'"),
    (["evaluate"], {"holdout": 7}, "'holdout' is 7, not a file path or null"),
    (["evaluate", "--curve"], {"batch_size": 16.5, "steps_per_epoch": 2}, "'batch_size' is 16.5, not an integer >= 1"),
    (["evaluate", "--curve"], {}, "has no 'steps_per_epoch'"),
    (["sample"], {"latent_dim": [8]}, "'latent_dim' is [8], not an integer >= 1"),
    (["progress"], {"epochs": -2}, "'epochs' is -2, not an integer >= 1"),
    (["neighbours"], {"data": ""}, "'data' is '', not a file path"),
])
def test_a_hand_edited_config_is_one_line_naming_the_file_and_key(run, tmp_path, capsys, command, changes,
                                                                   message):
    edited = _run_with_config(run, tmp_path / "edited", **changes)
    main = evaluate.main if command[0] == "evaluate" else generate.main
    argv = [edited, *(command[1:] or ["--no-quality"])] if command[0] == "evaluate" else [command[0], edited]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert os.path.join(edited, "config.json") in line and message in line


# TensorFlow's and absl's C++ log lines: "E0000 00:00:1796577978.569852   25276 cuda_platform.cc:52] ..."
TENSORFLOW_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\]"
                                 r"|WARNING: All log messages before absl)")


def test_a_command_starts_quietly_and_facegan_verbose_shows_tensorflows_log_lines(tmp_path):
    from conftest import ROOT
    run = shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "run_15e96f4", "tensorflow"), tmp_path / "run")
    # generate.py loads the generator (and TensorFlow), then refuses a grid of 2^26 pixels: its own error
    command = [sys.executable, os.path.join(ROOT, "generate.py"), "sample", str(run), "--n", "100000", "--format",
               "grid", "--out", str(tmp_path / "out")]
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert quiet.returncode == 2
    assert _one_line(quiet.stderr).startswith("generate.py: error: a grid of 100,000 faces")
    verbose = subprocess.run(command, capture_output=True, text=True, env={**env, cli.VERBOSE_ENV: "1"}, cwd=ROOT,
                             timeout=300)
    assert verbose.returncode == 2 and verbose.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
    assert any(TENSORFLOW_LOG_LINE.match(line) for line in verbose.stderr.splitlines()), verbose.stderr


def test_models_py_prints_its_summaries_without_tensorflows_log_lines():
    from conftest import ROOT
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "models.py"), "--image-size", "32", "--width", "8"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "Total params" in result.stdout
    assert not [line for line in result.stderr.splitlines() if TENSORFLOW_LOG_LINE.match(line)], result.stderr
