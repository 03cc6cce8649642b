import json
import shutil

import numpy as np
import pytest

from facegan import demo_faces
from facegan import data_io
import evaluate
from facegan import evaluation
from facegan import baseline
from facegan import scoring
import random_baseline
import train
from conftest import TINY_TRAIN_FLAGS, colour_layout_features  # a stand-in FID network


def test_uniform_baseline_spans_all_pixel_values():
    images = baseline.make_random_images(50, 32, "uniform", seed=1)
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255 and abs(images.mean() - 127.5) < 2


def test_gaussian_baseline_matches_the_data_colour_statistics(tiny_faces):
    images = baseline.make_random_images(200, 32, "gaussian", tiny_faces, seed=1)
    real = tiny_faces.reshape(-1, 3).astype(float)
    fake = images.reshape(-1, 3).astype(float)
    np.testing.assert_allclose(fake.mean(0), real.mean(0), atol=4)
    np.testing.assert_allclose(fake.std(0), real.std(0), rtol=0.15)


def test_baseline_cli_writes_array_and_grid(tmp_path):
    assert random_baseline.main(["--n", "20", "--out", str(tmp_path / "rb")]) == 0
    assert np.load(tmp_path / "rb" / "samples.npy").shape == (20, 64, 64, 3)
    assert (tmp_path / "rb" / "grid.png").exists()


def test_judge_catches_noise_but_not_real_faces():
    faces = demo_faces.make_demo_faces(240, size=32, seed=5)
    noise = baseline.make_random_images(120, 32, "uniform", seed=5)
    noise_accuracy, _ = scoring.judge_accuracy(faces[:120], noise, steps=150)
    real_accuracy, _ = scoring.judge_accuracy(faces[:120], faces[120:], steps=150)
    assert noise_accuracy > 0.95
    assert real_accuracy < 0.75


@pytest.fixture
def tiny_run(tmp_path, tiny_dataset, quick_judge):
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "run", "--epochs", "2",
                       "--snapshot-every", "1", *TINY_TRAIN_FLAGS]) == 0
    return tmp_path / "run"


def test_evaluate_writes_report_metrics_and_pictures(tiny_run, tmp_path):
    samples = tmp_path / "other.npy"
    np.save(samples, baseline.make_random_images(30, 32, seed=2))
    np.savez(tmp_path / "losses.npz", d_loss=np.linspace(1.4, 0.5, 50), g_loss=np.linspace(0.7, 3.0, 50))
    copy = shutil.copytree(tiny_run, tmp_path / "copy")  # another run directory, as a system
    assert evaluate.main([str(tiny_run), "random", f"again:{tiny_run / 'generator.keras'}", str(copy),
                          f"other:{samples}", "--n", "40", "--no-quality"]) == 0
    out = tiny_run / "eval"
    # another run's loss curves, and another GAN's per-step losses beside its samples, get their own plots
    for name in ("report.md", "metrics.json", "losses.png", "comparison.png", "losses_copy.png",
                 "losses_other.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "metrics.json").read_text())
    systems = [row["system"] for row in results["systems"]]
    assert systems == ["real (held out)", "run", "random uniform", "again", "copy", "other"]
    rows = {row["system"]: row for row in results["systems"]}
    # a generator file and a copy of the run give the run's own samples
    assert rows["again"]["d_mean"] == rows["copy"]["d_mean"] == rows["run"]["d_mean"]
    assert all(0 <= row["judge_accuracy"] <= 1 and 0 <= row["d_accuracy"] <= 1 for row in results["systems"])
    assert "| random uniform |" in (out / "report.md").read_text()


def test_evaluate_reports_the_epoch_and_digest_of_the_generator_it_scored_and_which_discriminator_judged(
        tiny_run, capsys):
    from facegan import history as history_log
    from facegan import run_state
    scored = data_io.file_digest(str(tiny_run / "generator.keras"))
    np.save(tiny_run / "d_losses.npy", np.zeros(5, np.float32))  # the run's files moved on past its generator
    np.save(tiny_run / "g_losses.npy", np.zeros(5, np.float32))
    history = history_log.new_history()
    history_log.record_step(history, {key: 0.5 for key in history_log.STEP_KEYS})
    discriminator = data_io.load_keras_model(str(tiny_run / "discriminator.keras"))
    run_state.save_model(str(tiny_run / "discriminator.keras"), discriminator, history)  # a D of step 1
    assert evaluate.main([str(tiny_run), "--n", "20", "--no-quality"]) == 0
    results = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    run_row = next(row for row in results["systems"] if row["system"] == "run")
    assert results["epochs_trained"] == 2 and (run_row["epoch"], run_row["generator_sha1"]) == (2, scored)
    assert "d_accuracy is the discriminator saved at step 1 (epoch 0 done); the generator scored is from step 4 " \
           "(epoch 2)" in (tiny_run / "eval" / "report.md").read_text()


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_evaluate_quality_metrics_and_offline_fid_note(tiny_run, monkeypatch, tmp_path):
    from facegan import inception
    from facegan import metrics

    def offline(*args, **kwargs):
        raise metrics._unavailable("no internet")
    monkeypatch.setattr(metrics, "load_inception", offline)
    monkeypatch.setenv(inception.CACHE_ENV, str(tmp_path / "empty-cache"))
    results = evaluation.evaluate(str(tiny_run), ["random"], n=32)
    rows = {row["system"]: row for row in results["systems"]}
    assert rows["random uniform"]["swd_avg"] > 1.5 * rows["real (held out)"]["swd_avg"]  # only 16 vs 16 here
    assert rows["random uniform"]["face_rate"] == 0.0
    assert results["fid_kid"].startswith("skipped: FID Inception weights not found")
    report = (tiny_run / "eval" / "report.md").read_text()
    assert "FID/KID skipped" in report and "`python inception.py`" in report and "--inception" in report


def test_evaluate_reports_fid_at_one_n_with_the_real_floor_and_the_resize(tiny_run, monkeypatch):
    monkeypatch.setattr(scoring, "load_fid_engines", lambda path: ([("stand-in", colour_layout_features)], None))
    results = evaluation.evaluate(str(tiny_run), ["random"], n=40)
    rows = {row["system"]: row for row in results["systems"]}
    assert results["fid_n"] == 16  # the real half B has 16 images: every FID is at that n
    assert all(row["fid_n"] == 16 for row in results["systems"])
    assert rows["random uniform"]["fid"] > 2 * rows["real (held out)"]["fid"]
    assert rows["random uniform"]["kid"] > 2 * abs(rows["real (held out)"]["kid"])
    report = (tiny_run / "eval" / "report.md").read_text()
    assert "fid_n = 16" in report and "real-vs-real floor at the same n = 16" in report
    assert "half_pixel_centers=False" in report and "| fid_n | fid | kid |" in report


def test_curve_scores_every_snapshot_of_each_run_against_images_seen(tiny_run, monkeypatch, tmp_path):
    monkeypatch.setattr(scoring, "load_fid_engines", lambda path: ([("stand-in", colour_layout_features)], None))
    other = shutil.copytree(tiny_run, tmp_path / "other")  # a second run, drawn beside the first
    shutil.rmtree(other / "eval", ignore_errors=True)
    (other / "snapshots" / "generator_epoch_001.keras").unlink()
    assert evaluate.main([str(tiny_run), "--curve", str(other), "--n", "20"]) == 0
    results = json.loads((tiny_run / "eval" / "curve.json").read_text())
    config = json.loads((tiny_run / "config.json").read_text())
    per_epoch = config["steps_per_epoch"] * config["batch_size"]
    assert [(p["run"], p["epoch"], p["images_seen"]) for p in results["points"]] == [
        ("run", 1, per_epoch), ("run", 2, 2 * per_epoch), ("other", 2, 2 * per_epoch)]
    assert results["n"] == 16 and results["floor"]["n"] == 16  # the floor at the same n as each point
    assert all(p["n"] == 16 and p["fid"] > results["floor"]["fid"] for p in results["points"])
    assert all(0 <= p["face_rate"] <= 1 for p in results["points"])
    speed = evaluation.training_speed(str(tiny_run))  # the run's own pace, from its history.json
    assert speed > 0 and [p["train_minutes"] for p in results["points"]] == [
        round(per_epoch / speed / 60, 2), round(2 * per_epoch / speed / 60, 2),
        round(2 * per_epoch / evaluation.training_speed(str(other)) / 60, 2)]
    assert (tiny_run / "eval" / "curve.png").stat().st_size > 10_000
    assert "| run epoch 2 |" in (tiny_run / "eval" / "curve.md").read_text()
    # again after one more snapshot: only that one is sampled and scored, the rest come from the cache
    _save_snapshot_of_epoch(other / "snapshots" / "generator_epoch_002.keras",
                            other / "snapshots" / "generator_epoch_003.keras", 3, config["steps_per_epoch"])
    sampled = []
    sample_faces = data_io.sample_faces
    monkeypatch.setattr(data_io, "sample_faces", lambda *a, **k: sampled.append(1) or sample_faces(*a, **k))
    assert evaluate.main([str(tiny_run), str(other), "--curve", "--n", "20"]) == 0
    again = json.loads((tiny_run / "eval" / "curve.json").read_text())
    assert len(sampled) == 1 and again["points"][:3] == results["points"] and again["points"][3]["epoch"] == 3
    assert (tiny_run / "eval" / "curve_reference_features.npz").exists()  # the reference set's, kept too


def _save_snapshot_of_epoch(source, path, epoch, steps_per_epoch):
    """A snapshot as train.py saves it after `epoch` epochs (the generator of `source`, recorded as that epoch)."""
    from facegan import history as history_log
    from facegan import run_state
    history = history_log.new_history()
    for closed in range(1, epoch + 1):
        for _ in range(steps_per_epoch):
            history_log.record_step(history, {key: 0.5 for key in history_log.STEP_KEYS})
        history_log.record_epoch(history, closed, steps_per_epoch, 16, 1.0)
    run_state.save_model(str(path), data_io.load_generator_file(str(source)), history)


def test_curve_counts_the_images_each_snapshot_saw_after_the_steps_per_epoch_changed(tiny_run, monkeypatch):
    monkeypatch.setattr(scoring, "load_fid_engines", lambda path: ([("stand-in", colour_layout_features)], None))
    config = json.loads((tiny_run / "config.json").read_text())
    seen = [epoch * config["steps_per_epoch"] * config["batch_size"] for epoch in (1, 2)]
    config["steps_per_epoch"] = 5  # as a resume on more data records it
    (tiny_run / "config.json").write_text(json.dumps(config))
    assert evaluate.main([str(tiny_run), "--curve", "--n", "20"]) == 0
    points = json.loads((tiny_run / "eval" / "curve.json").read_text())["points"]
    assert [(p["epoch"], p["images_seen"]) for p in points] == [(1, seen[0]), (2, seen[1])]


def test_training_minutes_follow_the_runs_usual_pace_not_a_compiling_or_shared_epoch(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps({"epoch": 6, "images_per_second": [50.0, 120.0, 0.0, 118.0,
                                                                                         30.0, 119.0]}))
    assert evaluation.training_speed(str(tmp_path)) == 118.0  # the epoch resumed with no steps left counts not
    assert evaluation.training_speed(str(tmp_path / "missing")) is None


def test_curve_without_snapshots_says_how_to_get_them(tiny_run, capsys):
    shutil.rmtree(tiny_run / "snapshots")
    assert evaluate.main([str(tiny_run), "--curve"]) == 2
    assert "--snapshot-every" in capsys.readouterr().err


def test_loss_plot_shows_adas_p_and_ds_accuracy_on_held_out_and_training_reals(tmp_path):
    from facegan import evaluation
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "d_losses.npy", np.array([1.2, 1.0, 0.9], np.float32))
    np.save(run / "g_losses.npy", np.array([0.8, 1.1, 1.3], np.float32))
    steps = {key: np.linspace(0.2, 0.8, 30).astype(np.float32) for key in ("d_loss", "g_loss", "d_real", "d_fake")}
    np.savez(run / "steps.npz", ada_p=np.linspace(0, 0.3, 30).astype(np.float32), **steps)
    # the first epoch ran before the accuracies were recorded
    (run / "history.json").write_text(json.dumps({"epoch": 3, "d_holdout_accuracy": [None, 0.5, 0.3],
                                                  "d_train_accuracy": [None, 0.6, 0.8]}))
    accuracies = evaluation.memorisation_history(str(run))
    assert list(accuracies) == ["D calls held-out reals real", "D calls training reals real"]
    np.testing.assert_array_equal(accuracies["D calls training reals real"], [np.nan, 0.6, 0.8])
    evaluation.plot_losses(str(run), str(tmp_path / "losses.png"))
    assert (tmp_path / "losses.png").stat().st_size > 10_000
    assert evaluation.memorisation_history(str(tmp_path)) == {}  # no history.json: nothing to plot


def test_curve_cache_follows_the_held_out_pixels_and_the_network_and_survives_damage(tiny_run, monkeypatch, capsys):
    from facegan import metrics
    engines = [("stand-in", colour_layout_features)]
    monkeypatch.setattr(scoring, "load_fid_engines", lambda path: (engines, None))
    # quick stand-ins for the slow metrics: this test is about which scores are computed again
    monkeypatch.setattr(metrics, "sliced_wasserstein", lambda a, b, seed: {"swd_avg": float(abs(a.mean() - b.mean()))})
    monkeypatch.setattr(metrics, "ms_ssim_diversity", lambda images, n_pairs, seed: 0.5)
    sampled = []
    sample_faces = data_io.sample_faces
    monkeypatch.setattr(data_io, "sample_faces", lambda *a, **k: sampled.append(1) or sample_faces(*a, **k))

    def curve():
        sampled.clear()
        assert evaluate.main([str(tiny_run), "--curve", "--n", "20"]) == 0
        return json.loads((tiny_run / "eval" / "curve.json").read_text())
    first = curve()
    # the same file, at the same size, with other pixels (as after preprocess.py --crop tight): all scored again
    holdout = json.loads((tiny_run / "config.json").read_text())["holdout"]
    np.save(holdout, 255 - np.load(holdout))
    second = curve()
    assert len(sampled) == 2 and second["floor"]["fid"] != first["floor"]["fid"]
    # another FID network under the same name: scored again
    engines[:] = [("stand-in", lambda images: 2 * colour_layout_features(images))]
    third = curve()
    assert len(sampled) == 2 and third["floor"]["fid"] != second["floor"]["fid"]
    # a cut-off score cache and reference features: ignored with a note, rebuilt, the same numbers
    for name in ("curve_cache.json", "curve_reference_features.npz"):
        path = tiny_run / "eval" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capsys.readouterr()
    assert curve()["points"] == third["points"] and len(sampled) == 2
    assert capsys.readouterr().out.count("ignoring the damaged cache") == 2
