import json
import os

import ablation


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
