import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import ablation
from facegan import presets
from facegan import run_state
import train
from facegan import run_setup
from conftest import ROOT, wait_for_checkpoint


def test_ablation_trains_each_row_and_scores_raw_and_ema_generators(tmp_path, tiny_dataset, capsys,
                                                                    quick_judge):
    out = str(tmp_path / "outputs")
    flags = ["--rows", "diffaug", "--epochs", "1", "--batch-size", "16", "--data", tiny_dataset, "--out", out,
             "--n", "20", "--no-fid", "--train-args", "--g-width 8 --d-width 8 --max-steps 2"]
    assert ablation.main(flags) == 0
    result = json.loads((tmp_path / "outputs" / "ablation" / "ablation.json").read_text())
    systems = [row["system"] for row in result["rows"]]
    assert systems == ["held-out reals (floor)", ablation.ROWS["diffaug"][0], ablation.ROWS["diffaug"][0] + " + EMA"]
    for row in result["rows"]:
        assert row["swd_avg"] > 0 and 0 <= row["judge_accuracy"] <= 1
        assert row["n_samples"] == (16 if row["row"] == "real" else 20)  # the real row: the other half of 32
    assert all(row["epochs"] == 1 and row["train_seed"] == 0 for row in result["rows"][1:])
    assert "| train_seed | epochs |" in (tmp_path / "outputs" / "ablation" / "ablation.md").read_text()
    config = json.loads((tmp_path / "outputs" / "abl_diffaug_s0" / "config.json").read_text())
    assert config["diffaug"] == "color,translation,cutout" and config["ema"] == 0.999
    assert os.path.exists(tmp_path / "outputs" / "ablation" / "ablation.png")
    # finished runs are not trained again
    model = tmp_path / "outputs" / "abl_diffaug_s0" / "generator.keras"
    mtime = os.path.getmtime(model)
    capsys.readouterr()
    assert ablation.main(flags) == 0
    assert os.path.getmtime(model) == mtime
    # ... nor scored again: the table comes back the same from the scores cached beside each generator
    assert capsys.readouterr().out.count("scored before") == 2
    again = json.loads((tmp_path / "outputs" / "ablation" / "ablation.json").read_text())
    assert [row["swd_avg"] for row in again["rows"]] == [row["swd_avg"] for row in result["rows"]]


def test_preset_best_is_the_ablation_row_it_was_chosen_from_with_mode_seeking_doubled(tmp_path, tiny_dataset):
    import inspect

    import train
    best_row = inspect.signature(ablation.write_table).parameters["best"].default
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), "--batch-size", "16"]
    _, from_row, _ = run_setup.prepare_run(train.parse_args([*flags, "--name", "row", *ablation.EMA,
                                                         *ablation.ROWS[best_row][1]]))
    _, from_preset, _ = run_setup.prepare_run(train.parse_args([*flags, "--name", "preset", "--preset", "best"]))
    # the second recipe study (docs/recipe_study.md) doubled the row's mode-seeking weight; both set the batch here
    assert {k for k in presets.RECIPE_KEYS if from_row[k] != from_preset[k]} == {"mode_seeking"}
    assert (from_row["mode_seeking"], from_preset["mode_seeking"]) == (3, 6)


def test_long_rows_each_change_one_setting_of_preset_best(tmp_path, tiny_dataset):
    import train
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), "--batch-size", "16"]

    def recipe_of(row):
        argv = [*flags, "--name", row, *ablation.EMA, *ablation.ROWS[row][1]]
        _, config, _ = run_setup.prepare_run(train.parse_args(argv))
        return {k: config[k] for k in presets.RECIPE_KEYS}
    best = recipe_of("long_best")
    # a run records D's resolved lr; ablation.py gives every row its batch
    assert best == {**presets.PRESETS["best"], "d_lr": presets.PAPER["lr"], "batch_size": 16}
    changed = {row: {k for k in best if recipe_of(row)[k] != best[k]} for row in ablation.SETS["long"][0]}
    assert changed["long_r1"] == {"r1", "r1_every"} and changed["long_lecam"] == {"lecam"}
    assert changed["long_bcr"] == {"bcr"} and changed["long_diffaug3"] == {"diffaug"}
    assert changed["long_ms10"] == {"mode_seeking"} and changed["long_transposed"] == {"upsample"}
    assert changed["long_sn_hinge"] == {"spectral_norm", "loss", "label_smoothing"}  # smoothing is bce-only


ROW_FLAGS = ["--rows", "dcgan", "--batch-size", "16", "--n", "20", "--no-fid", "--train-args",
             "--g-width 8 --d-width 8 --max-steps 4 --n-samples 16 --precision fp32"]


def test_a_damaged_history_of_a_row_is_one_line(tmp_path, tiny_dataset, capsys):
    run = tmp_path / "abl_dcgan_s0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 2}))
    (run / "history.json").write_text('{"epoch": 2, "d_los')  # cut off
    assert ablation.main([*ROW_FLAGS, "--epochs", "2", "--data", tiny_dataset, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"ablation.py: error: cannot read {run / 'history.json'}: "
                                        "Unterminated string starting at: line 1 column 14 (char 13)"]


def _processes_running(word):
    """The processes whose command line holds `word`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if word.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ctrl_c_and_sigterm_stop_the_training_run_with_a_checkpoint_and_exit_130(tmp_path, tiny_dataset):
    # Ctrl-C at a terminal signals ablation.py's whole process group; SIGTERM comes to ablation.py alone
    processes = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        processes[sig] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "ablation.py"), *ROW_FLAGS, "--epochs", "1000", "--data", tiny_dataset,
             "--out", str(tmp_path / sig.name)], cwd=ROOT, process_group=0, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    try:
        for sig, process in processes.items():
            run = tmp_path / sig.name / "abl_dcgan_s0"
            wait_for_checkpoint(run, 4, process)  # train.py has finished its first epoch
            if sig == signal.SIGINT:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
            out, err = process.communicate(timeout=120)
            assert process.returncode == 130, err
            assert "Traceback" not in out + err and err.strip().splitlines()[-1] == "ablation.py: interrupted"
            assert f"{sig.name} received: finishing this step" in out  # train.py got it, once
            assert f"train.py stopped {run} with a checkpoint" in out
            assert not _processes_running(str(run))  # no train.py left behind
            assert int(run_state.checkpoint_names(str(run))[-1][5:14]) > 4  # the checkpoint taken at the signal
    finally:  # a failure above must not leave a 1000-epoch run going
        for pid in _processes_running(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)


def _no_training(monkeypatch):
    monkeypatch.setattr(ablation.subprocess, "run", lambda *a, **k: pytest.fail("trained before checking"))


@pytest.mark.parametrize("train_args, message", [
    ("--seed 5", "may not give --seed"), ("--epochs 3", "may not give --epochs"),
    ("--name x", "may not give --name"), ("--diffaug translation", "may not give --diffaug"),
    ("--preset best", "may not give --preset"), ("--no-such-flag 1", "unrecognized arguments: --no-such-flag 1"),
])
def test_train_args_that_would_change_what_a_row_is_are_refused_before_training(tmp_path, tiny_dataset, capsys,
                                                                                monkeypatch, train_args, message):
    _no_training(monkeypatch)
    assert ablation.main(["--rows", "dcgan", "--epochs", "1", "--batch-size", "16", "--data", tiny_dataset,
                          "--out", str(tmp_path / "outputs"), "--train-args", train_args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _hand_made_run(out, row, seed, data, config_changes=None, epochs=1):
    """A finished run of `row` as train.py records it (config.json from train.py's own parse), without training."""
    path = out / f"abl_{row}_s{seed}"
    flags = ["--data", data, "--epochs", "1", "--batch-size", "16", "--seed", str(seed), "--out", str(out),
             "--name", path.name, *ablation.EMA, *ablation.ROWS[row][1]]
    _, config, _ = run_setup.prepare_run(train.parse_args(flags))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**config, **(config_changes or {})}))
    (path / "history.json").write_text(json.dumps({"epoch": epochs, "epoch_seconds": [1.0] * epochs}))
    return path


@pytest.mark.parametrize("changes, epochs, message", [
    ({"seed": 5}, 1, "seed 5 (this study: 0)"),
    ({"diffaug": ""}, 1, "diffaug '' (this study: 'color,translation,cutout')"),
    ({"g_width": 8}, 1, "g_width 8 (this study: 64)"),
    ({"data_fingerprint": "sha1:0"}, 1, "other training data than --data"),
    ({}, 3, "3 epochs trained (this study: 1)"),
])
def test_a_run_that_is_not_this_studys_row_is_refused_before_training(tmp_path, tiny_dataset, capsys,
                                                                       monkeypatch, changes, epochs, message):
    _hand_made_run(tmp_path / "outputs", "diffaug", 0, tiny_dataset, changes, epochs)
    _no_training(monkeypatch)
    capsys.readouterr()
    assert ablation.main(["--rows", "diffaug", "--epochs", "1", "--batch-size", "16", "--data", tiny_dataset,
                          "--out", str(tmp_path / "outputs"), "--no-fid", "--n", "20"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_ablation_checks_its_data_and_output_folder_before_training(tmp_path, tiny_dataset, tiny_faces, capsys,
                                                                    monkeypatch):
    _no_training(monkeypatch)
    flags = ["--rows", "dcgan", "--epochs", "1", "--batch-size", "16", "--no-fid"]
    (tmp_path / "file").write_text("in the way")
    assert ablation.main([*flags, "--data", tiny_dataset, "--out", str(tmp_path / "file")]) == 2
    assert "cannot write to" in capsys.readouterr().err
    np.save(tmp_path / "mixed_train.npy", tiny_faces[:64])  # its holdout holds two of its training images
    np.save(tmp_path / "mixed_holdout.npy", np.concatenate([tiny_faces[64:], tiny_faces[[5, 9]]]))
    assert ablation.main([*flags, "--data", str(tmp_path / "mixed_train.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "2 of its 34 images are in the training data" in capsys.readouterr().err


def test_ablation_scores_follow_the_held_out_pixels_and_survive_a_damaged_cache(tmp_path, tiny_dataset, capsys,
                                                                                quick_judge, monkeypatch):
    from facegan import scoring
    import models
    # a quick stand-in for the metrics: this test is about which rows are scored again
    monkeypatch.setattr(scoring, "image_metrics", lambda reference, images, *a: {"swd_avg": float(images.mean())})
    out = tmp_path / "outputs"
    run = _hand_made_run(out, "dcgan", 0, tiny_dataset, {"g_width": 8, "latent_dim": 8})
    for name in ("generator.keras", "generator_raw.keras"):  # two generators, as the raw and EMA ones are
        models.build_generator(latent_dim=8, image_size=32, width=8).save(run / name)

    def score():
        capsys.readouterr()
        ablation.score(str(out), ["dcgan"], [0], 20, fid=False)
        return capsys.readouterr().out
    score()
    assert score().count("scored before") == 2
    holdout = tiny_dataset.replace("_train.npy", "_holdout.npy")
    np.save(holdout, 255 - np.load(holdout))  # same file, same size, other pixels
    printed = score()
    assert "scored before" not in printed and printed.count("scoring the paper") == 2
    cache = run / "ablation_scores.json"
    cache.write_text(cache.read_text()[:40])
    printed = score()
    assert "ignoring the damaged cache" in printed and printed.count("scoring the paper") == 2
    assert score().count("scored before") == 2  # rebuilt
