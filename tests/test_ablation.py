import json
import os
import signal
import subprocess
import sys

import ablation
import run_state
from conftest import ROOT, wait_for_checkpoint


def test_ablation_trains_each_row_and_scores_raw_and_ema_generators(tmp_path, tiny_dataset, capsys,
                                                                    quick_judge):
    out = str(tmp_path / "outputs")
    code = ablation.main(["--rows", "diffaug", "--epochs", "1", "--batch-size", "16", "--data", tiny_dataset,
                          "--out", out, "--n", "16", "--no-fid", "--train-args",
                          "--g-width 8 --d-width 8 --max-steps 2"])
    assert code == 0
    result = json.loads((tmp_path / "outputs" / "ablation" / "ablation.json").read_text())
    systems = [row["system"] for row in result["rows"]]
    assert systems == ["held-out reals (floor)", ablation.ROWS["diffaug"][0], ablation.ROWS["diffaug"][0] + " + EMA"]
    for row in result["rows"]:
        assert row["swd_avg"] > 0 and 0 <= row["judge_accuracy"] <= 1 and row["n_samples"] == 16
    config = json.loads((tmp_path / "outputs" / "abl_diffaug_s0" / "config.json").read_text())
    assert config["diffaug"] == "color,translation,cutout" and config["ema"] == 0.999
    assert os.path.exists(tmp_path / "outputs" / "ablation" / "ablation.png")
    # finished runs are not trained again
    model = tmp_path / "outputs" / "abl_diffaug_s0" / "generator.keras"
    mtime = os.path.getmtime(model)
    capsys.readouterr()
    assert ablation.main(["--rows", "diffaug", "--epochs", "1", "--data", tiny_dataset, "--out", out, "--n", "16",
                          "--no-fid"]) == 0
    assert os.path.getmtime(model) == mtime
    # ... nor scored again: the table comes back the same from the scores cached beside each generator
    assert capsys.readouterr().out.count("scored before") == 2
    again = json.loads((tmp_path / "outputs" / "ablation" / "ablation.json").read_text())
    assert [row["swd_avg"] for row in again["rows"]] == [row["swd_avg"] for row in result["rows"]]


def test_preset_best_is_exactly_the_ablation_row_it_was_chosen_from(tmp_path, tiny_dataset):
    import inspect

    import gan_step
    import train
    best_row = inspect.signature(ablation.write_table).parameters["best"].default
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), "--batch-size", "16"]
    _, from_row, _ = train.prepare_run(train.parse_args([*flags, "--name", "row", *ablation.EMA,
                                                         *ablation.ROWS[best_row][1]]))
    _, from_preset, _ = train.prepare_run(train.parse_args([*flags, "--name", "preset", "--preset", "best"]))
    assert {k: from_row[k] for k in gan_step.RECIPE_KEYS} == {k: from_preset[k] for k in gan_step.RECIPE_KEYS}


def test_long_rows_each_change_one_setting_of_preset_best(tmp_path, tiny_dataset):
    import gan_step
    import train
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), "--batch-size", "16"]

    def recipe_of(row):
        argv = [*flags, "--name", row, *ablation.EMA, *ablation.ROWS[row][1]]
        _, config, _ = train.prepare_run(train.parse_args(argv))
        return {k: config[k] for k in gan_step.RECIPE_KEYS}
    best = recipe_of("long_best")
    assert best == {**gan_step.PRESETS["best"], "d_lr": gan_step.PAPER["lr"]}  # a run records D's resolved lr
    changed = {row: {k for k in best if recipe_of(row)[k] != best[k]} for row in ablation.SETS["long"][0]}
    assert changed["long_r1"] == {"r1", "r1_every"} and changed["long_lecam"] == {"lecam"}
    assert changed["long_bcr"] == {"bcr"} and changed["long_diffaug3"] == {"diffaug"}
    assert changed["long_ms10"] == {"mode_seeking"}
    assert changed["long_sn_hinge"] == {"spectral_norm", "loss", "label_smoothing"}  # smoothing is bce-only


ROW_FLAGS = ["--rows", "dcgan", "--batch-size", "16", "--n", "16", "--no-fid", "--train-args",
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
