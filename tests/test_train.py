import json
import os

import keras
import numpy as np
import pytest

from facegan import gan_step
import models
from facegan import presets
import train
from facegan import data_io
from facegan import training_data
from facegan import run_setup
from facegan import settings
from conftest import PAPER_RECIPE, TINY_TRAIN_FLAGS, usage_error


def _train(tmp_path, data, *extra):
    return train.main(["--data", data, "--out", str(tmp_path / "outputs"), "--name", "run",
                       *TINY_TRAIN_FLAGS, *extra])


def test_tiny_run_writes_one_loss_entry_per_epoch_grids_and_a_loadable_generator(tmp_path, tiny_dataset):
    assert _train(tmp_path, tiny_dataset, "--epochs", "2") == 0
    run = tmp_path / "outputs" / "run"
    d_losses, g_losses = np.load(run / "d_losses.npy"), np.load(run / "g_losses.npy")
    assert d_losses.shape == (2,) and g_losses.shape == (2,)
    assert np.isfinite(d_losses).all() and np.isfinite(g_losses).all()
    assert sorted(os.listdir(run / "samples")) == ["epoch_001.png", "epoch_002.png"]
    config = json.loads((run / "config.json").read_text())
    for key in ("lr", "beta1", "batch_size", "latent_dim", "seed", "epochs", "data", "holdout", "image_size"):
        assert key in config
    assert config["lr"] == 2e-4 and config["beta1"] == 0.5 and config["latent_dim"] == 100
    generator = keras.models.load_model(run / "generator.keras")
    assert generator.output_shape == (None, 32, 32, 3)
    steps = np.load(run / "steps.npz")
    assert len(steps["d_loss"]) == 4 and {"g_loss", "d_real", "d_fake", "ada_p"} <= set(steps.files)
    # the memorisation signal: the share of held-out and of training reals D calls real, after each epoch
    history = json.loads((run / "history.json").read_text())
    for key in ("d_holdout_accuracy", "d_train_accuracy"):
        assert len(history[key]) == 2 and all(0 <= value <= 1 for value in history[key])


def test_resume_continues_the_epoch_count_without_gaps_and_keeps_the_newest_checkpoints(tmp_path, tiny_dataset):
    assert _train(tmp_path, tiny_dataset, "--epochs", "2", "--checkpoint-every", "1", "--keep-checkpoints", "3") == 0
    run = tmp_path / "outputs" / "run"
    first = np.load(run / "d_losses.npy")
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    resumed = np.load(run / "d_losses.npy")
    assert resumed.shape == (3,) and np.array_equal(resumed[:2], first)
    assert "epoch_003.png" in os.listdir(run / "samples")
    # a checkpoint after every step, the run's --keep-checkpoints 3 newest kept
    assert sorted(os.listdir(run / "checkpoints")) == [f"step_{step:09d}.npz" for step in (4, 5, 6)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_dataset, precision):
    # bf16: the default recipe; fp32: the paper's, as a run saved before the recipe settings existed trained
    flags = [*TINY_TRAIN_FLAGS, "--precision", precision, *(["--preset", "dcgan"] if precision == "fp32" else [])]
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "straight", "--epochs", "2",
                       *flags]) == 0
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path), "--name", "split", "--epochs", "1",
                       *flags]) == 0
    if precision == "fp32":
        # a run saved before the recipe settings existed (it trained in fp32): its config.json lacks them, and
        # resuming fills the paper's and fp32, whatever --precision auto would pick on this machine
        config_path = tmp_path / "split" / "config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({k: v for k, v in config.items()
                                           if k not in (*presets.RECIPE_KEYS, "preset", "precision", "strategy")
                                           or k in settings.RESUME_REQUIRED}))  # it had its batch and betas
    assert train.main(["--resume", str(tmp_path / "split"), "--epochs", "2"]) == 0
    straight, split = np.load(tmp_path / "straight" / "steps.npz"), np.load(tmp_path / "split" / "steps.npz")
    for key in ("d_loss", "g_loss"):  # bitwise: same data order, noise RNG, optimizer state, precision
        np.testing.assert_array_equal(split[key], straight[key])
    assert json.loads((tmp_path / "split" / "config.json").read_text())["precision"] == precision


def test_demo_mode_without_celeba(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no data/ folder
    monkeypatch.setattr(training_data, "DEMO_SIZE", 64)
    assert train.main(["--epochs", "1", "--name", "demo", *TINY_TRAIN_FLAGS]) == 0
    assert "DEMO MODE" in capsys.readouterr().out
    assert (tmp_path / "outputs" / "demo" / "samples" / "epoch_001.png").exists()
    config = json.loads((tmp_path / "outputs" / "demo" / "config.json").read_text())
    assert config["demo"] is True
    # the demo and CelebA both train the best recipe, the paper's only with --preset dcgan
    assert config["preset"] == "best" and config["mode_seeking"] == presets.PRESETS["best"]["mode_seeking"]
    data = ["--data", str(tmp_path / "data" / "demo64_train.npy"), "--batch-size", "16", "--out", str(tmp_path / "o")]
    _, celeba_config, _ = run_setup.prepare_run(train.parse_args(data))
    assert {k: celeba_config[k] for k in presets.RECIPE_KEYS if k not in ("g_lr", "d_lr", "batch_size")} == {
        k: v for k, v in presets.PRESETS["best"].items() if k not in ("g_lr", "d_lr", "batch_size")}
    assert celeba_config["preset"] == "best" and (celeba_config["g_lr"], celeba_config["d_lr"]) == (4e-4, 2e-4)
    _, paper_config, _ = run_setup.prepare_run(train.parse_args([*data, "--preset", "dcgan"]))
    assert paper_config["preset"] == "dcgan" and paper_config["mode_seeking"] == 0 and paper_config["ema"] == 0


def test_wrong_data_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 32, 32), np.float32))
    assert _train(tmp_path, str(bad)) == 2
    assert "expected uint8 (N, S, S, 3)" in capsys.readouterr().err


def test_tensorboard_logs_scalars_and_the_sample_grid(tmp_path, tiny_dataset):
    import glob
    import tensorflow as tf
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", "--tensorboard") == 0
    tags = []
    for path in glob.glob(str(tmp_path / "outputs" / "run" / "tensorboard" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags += [value.tag for value in event.summary.value]
    assert {"epoch/d_loss", "epoch/g_loss", "epoch/D(x)", "epoch/images_per_second",
            "fixed_noise_samples"} <= set(tags)
    assert tags.count("step/d_loss") == 2  # one per step


def test_preset_best_trains_saves_the_ema_generator_and_resumes_bit_exactly(tmp_path, tiny_dataset):
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", "--preset", "best") == 0
    run = tmp_path / "outputs" / "run"
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    averaged = keras.models.load_model(run / "generator.keras")
    trained = keras.models.load_model(run / "generator_raw.keras")
    # the averaged G lags the trained one: same architecture, different weights
    assert not np.allclose(averaged.get_weights()[0], trained.get_weights()[0])
    # two straight epochs give the same losses as one epoch + resume (EMA and augmentation noise are
    # checkpointed)
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "straight",
                       *TINY_TRAIN_FLAGS, "--epochs", "2", "--preset", "best"]) == 0
    resumed, straight = np.load(run / "steps.npz"), np.load(tmp_path / "outputs" / "straight" / "steps.npz")
    for key in ("d_loss", "g_loss"):
        np.testing.assert_array_equal(resumed[key], straight[key])


def test_hinge_lazy_r1_lecam_bcr_ttur_ada_resize_and_every_diffaug_op_train_and_resume_exactly(tmp_path,
                                                                                             tiny_dataset):
    flags = [*PAPER_RECIPE, "--ema", "0.9", "--diffaug", "color,translation,cutout,flip", "--loss", "hinge",
             "--r1", "1", "--r1-every", "3", "--lecam", "0.3", "--bcr", "1", "--d-lr", "4e-4", "--g-lr", "1e-4",
             "--ada", "0.05", "--ada-kimg", "1", "--ada-ops", "color,cutout,flip", "--upsample", "resize",
             "--precision", "fp32"]
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", *flags) == 0
    run = tmp_path / "outputs" / "run"
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == "hinge" and config["r1_every"] == 3 and config["lecam"] == 0.3 and config["bcr"] == 1
    assert (config["ada_target"], config["ada_kimg"], config["ada_ops"], config["upsample"]) == (
        0.05, 1, "color,cutout,flip", "resize")
    # the LeCam anchors, ADA's state and the lazy-R1 phase are part of the checkpoint: the resumed run equals a
    # straight one
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "straight",
                       *TINY_TRAIN_FLAGS, "--epochs", "2", *flags]) == 0
    resumed, straight = np.load(run / "steps.npz"), np.load(tmp_path / "outputs" / "straight" / "steps.npz")
    assert np.isfinite(resumed["d_loss"]).all() and len(resumed["d_loss"]) == 4
    for key in ("d_loss", "g_loss", "ada_p"):
        np.testing.assert_array_equal(resumed[key], straight[key])
    assert ((resumed["ada_p"] >= 0) & (resumed["ada_p"] <= 1)).all()


def test_ada_needs_diffaug_ops_and_a_single_device(tmp_path, tiny_dataset, capsys):
    assert _train(tmp_path, tiny_dataset, "--ada", "0.6", "--preset", "dcgan") == 2  # the paper has no DiffAugment
    assert "--ada adapts how often the --diffaug ops are applied" in capsys.readouterr().err
    assert _train(tmp_path, tiny_dataset, "--diffaug", "translation", "--ada-ops", "translation") == 2
    assert "--ada-ops names the ops whose probability --ada adapts" in capsys.readouterr().err
    assert _train(tmp_path, tiny_dataset, "--diffaug", "translation", "--ada", "0.6", "--ada-ops", "cutout") == 2
    assert "--ada-ops cutout: each op must also be in --diffaug (translation)" in capsys.readouterr().err
    assert "--ada-ops: unknown rotate" in usage_error(train.parse_args, ["--ada-ops", "rotate"], capsys)
    assert not (tmp_path / "outputs").exists()  # refused before the run directory is made
    assert "--ada is single-device only" in usage_error(train.parse_args, ["--ada", "0.6", "--diffaug", "flip",
                                                                           "--strategy", "mirrored"], capsys)


def test_preset_best_fills_its_options_and_flags_override_it(tmp_path, tiny_dataset):
    args = train.parse_args(["--data", tiny_dataset, "--preset", "best", "--ema", "0.99", "--out", str(tmp_path),
                             "--batch-size", "16"])
    _, config, _ = run_setup.prepare_run(args)
    assert config["ema"] == 0.99 and config["diffaug"] == "translation"
    assert config["g_lr"] == 4e-4 and config["d_lr"] == 2e-4  # G twice D's rate, D the paper's
    assert config["label_smoothing"] == 0.1 and config["mode_seeking"] == 6
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", tiny_dataset, "--preset", "best", "--loss", "hinge",
                                                       "--out", str(tmp_path), "--batch-size", "16"]))
    assert config["loss"] == "hinge" and config["label_smoothing"] == 0  # the hinge loss has no labels to smooth
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", tiny_dataset, "--out", str(tmp_path),
                                                       "--batch-size", "16", "--preset", "dcgan"]))
    assert {k: config[k] for k in presets.RECIPE_KEYS if k not in ("g_lr", "d_lr", "batch_size")} == {
        k: v for k, v in presets.PRESETS["dcgan"].items() if k not in ("g_lr", "d_lr", "batch_size")}  # the paper
    assert config["g_lr"] == config["d_lr"] == config["lr"]


def test_a_preset_sets_the_batch_and_adams_beta2_unless_given_and_the_demo_keeps_its_batch(monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "best", {**presets.PRESETS["best"], "batch_size": 64, "beta2": 0.99})
    config = settings.settings(settings.parse_args([]), demo=False)
    assert (config["batch_size"], config["beta2"]) == (64, 0.99)
    config = settings.settings(settings.parse_args(["--batch-size", "32", "--beta2", "0.9"]), demo=False)
    assert (config["batch_size"], config["beta2"]) == (32, 0.9)
    config = settings.settings(settings.parse_args(["--preset", "dcgan"]), demo=False)
    assert (config["batch_size"], config["beta2"]) == (128, 0.999)  # the paper's
    assert settings.settings(settings.parse_args([]), demo=True)["batch_size"] == settings.DEMO_DEFAULTS["batch_size"]
    assert "--batch-size 64 --beta2 0.99" in " ".join(presets.preset_flags("best"))


def test_each_preset_is_reachable_by_the_flags_its_help_lists(tmp_path, tiny_dataset):
    flags = ["--data", tiny_dataset, "--out", str(tmp_path), "--batch-size", "16"]
    for name in presets.PRESETS:
        _, by_preset, _ = run_setup.prepare_run(train.parse_args([*flags, "--preset", name]))
        _, by_flags, _ = run_setup.prepare_run(train.parse_args(["--preset", "dcgan", *presets.preset_flags(name),
                                                                 *flags]))  # the tiny batch given last wins
        assert {k: by_flags[k] for k in presets.RECIPE_KEYS} == {k: by_preset[k] for k in presets.RECIPE_KEYS}
    help_text = "".join(train.build_parser().format_help().split())  # argparse may wrap lines at any hyphen
    assert "".join(presets.preset_flags("best")) in help_text and presets.preset_flags("best")


def test_help_is_instant_and_quiet_it_loads_no_deep_learning_framework():
    import subprocess
    import sys
    probe = ("import sys, contextlib, io, train\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try: train.main(['--help'])\n"
             "    except SystemExit: pass\n"
             "print(sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and done.stdout.strip() == "[]" and done.stderr == ""


def test_spectral_norm_keeps_d_kernels_at_norm_one_and_resumes_exactly(tmp_path, tiny_dataset, capsys):
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", "--spectral-norm", *PAPER_RECIPE) == 0
    run = tmp_path / "outputs" / "run"
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert json.loads((run / "config.json").read_text())["spectral_norm"] is True
    discriminator = keras.models.load_model(run / "discriminator.keras")
    assert not [layer for layer in discriminator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    normalised = [layer for layer in discriminator.layers if isinstance(layer, models.SpectralNormConv2D)]
    assert len(normalised) == 4  # three strided convolutions at 32 px and the logit layer
    for layer in normalised:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        kernel = kernel.reshape(-1, kernel.shape[-1])
        # the power-iteration estimate tracks the true largest singular value of the raw kernel
        u = keras.ops.convert_to_numpy(layer.u)
        v = u @ kernel.T / np.linalg.norm(u @ kernel.T)
        assert (v @ kernel @ u.T).item() == pytest.approx(np.linalg.norm(kernel, 2), rel=0.05)
    # the power-iteration state is checkpointed too: resumed == straight
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "straight",
                       *TINY_TRAIN_FLAGS, "--epochs", "2", "--spectral-norm", *PAPER_RECIPE]) == 0
    np.testing.assert_array_equal(np.load(run / "steps.npz")["d_loss"],
                                  np.load(tmp_path / "outputs" / "straight" / "steps.npz")["d_loss"])
    # a dry run passes the on/off flag through
    capsys.readouterr()
    assert train.main(["--dry-run", "--data", tiny_dataset, *TINY_TRAIN_FLAGS[:6], "--spectral-norm"]) == 0
    assert "dry run OK" in capsys.readouterr().out


def test_minibatch_std_run_saves_a_discriminator_that_reloads_and_resumes(tmp_path, tiny_dataset, capsys):
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", "--minibatch-std") == 0
    run = tmp_path / "outputs" / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["minibatch_std"] is True and config["minibatch_std_group"] == 4  # StyleGAN's groups by default
    discriminator = keras.models.load_model(run / "discriminator.keras")
    assert discriminator.get_layer("minibatch_std").group_size == 4
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert np.load(run / "d_losses.npy").shape == (2,)
    assert train.main(["--resume", str(run), "--epochs", "3", "--no-minibatch-std"]) == 2
    assert "--minibatch-std False differs from the run's True" in capsys.readouterr().err
    assert train.main(["--resume", str(run), "--epochs", "3", "--minibatch-std-group", "0"]) == 2
    assert "must be 0 (whole batch) or >= 2" in usage_error(train.parse_args, ["--minibatch-std-group", "1"],
                                                             capsys)  # a group of one has no spread


def test_epoch_batches_follow_the_seeded_order_and_the_pipeline_has_no_autotuner():
    import tensorflow as tf
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    dataset = training_data.make_dataset(tf.constant(images), 8, seed=3, epoch=2, steps=4, skip_steps=1)
    batches = [batch.numpy()[:, 0, 0, 0] for batch in dataset]
    order = np.random.default_rng([3, 2]).permutation(40)
    assert [list(b) for b in batches] == [list(order[8 * i: 8 * i + 8]) for i in (1, 2, 3)]
    # the autotuner's sleeping thread would hold up the end of each epoch (data_io.fixed_pipeline_options)
    assert dataset.options().autotune.enabled is False


def test_label_smoothing_is_refused_with_hinge(capsys):
    assert "applies to the bce loss only" in usage_error(
        train.parse_args, ["--loss", "hinge", "--label-smoothing", "0.1"], capsys)


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "-1", "must be > 0"), ("--lr", "nan", "must be a finite number"), ("--lr", "0", "must be > 0"),
    ("--g-lr", "inf", "must be a finite number"), ("--d-lr", "-0.0002", "must be > 0"),
    ("--beta1", "1", "must be in [0, 1)"), ("--beta2", "-0.1", "must be in [0, 1)"),
    ("--ema", "1", "must be in [0, 1)"), ("--label-smoothing", "0.5", "must be in [0, 0.5)"),
    ("--r1", "-1", "must be >= 0"), ("--mode-seeking", "-1", "must be >= 0"),
    ("--checkpoint-every", "-1", "must be >= 0"), ("--keep-checkpoints", "0", "must be >= 1"),
    ("--max-steps", "-1", "must be >= 0"), ("--collapse-steps", "-5", "must be >= 0"),
    ("--epochs", "0", "must be >= 1"), ("--batch-size", "0", "must be >= 1"), ("--g-width", "0", "must be >= 1"),
    ("--d-width", "-8", "must be >= 1"), ("--latent-dim", "0", "must be >= 1"),
    ("--seed", "-1", "must be between 0 and 4294967295"), ("--logical-cpus", "-1", "must be >= 0"),
    ("--sample-every", "0", "must be >= 1"), ("--n-samples", "0", "must be between 1 and 1024"),
        ("--n-samples", "40000", "must be between 1 and 1024"),
    ("--minibatch-std-group", "-1", "must be >= 0"), ("--r1-every", "0", "must be >= 1"),
    ("--lecam", "-0.1", "must be >= 0"), ("--bcr", "nan", "must be a finite number"),
    ("--batch-size", "1e3", "'1e3' is not an integer"),
])
def test_every_numeric_flag_is_checked_when_parsed(flag, value, message, capsys):
    assert f"argument {flag}: {message}" in usage_error(train.parse_args, [flag, value], capsys)


@pytest.mark.parametrize("argv, message", [
    (["--name", ".."], "--name must be a folder name"),
    (["--name", "a/b"], "--name must be a folder name"),
    (["--name", ""], "--name must be a folder name"),
    (["--resume", "outputs/x", "--dry-run"], "--dry-run starts its own run"),
    (["--resume", ""], "--resume must not be empty"),
    (["--data", "x_train.npy", "--demo"], "--demo trains on the embedded demo faces"),
    (["--allow-data-change"], "--allow-data-change applies to --resume only"),
    (["--strategy", "multiworker"], "--strategy multiworker needs TF_CONFIG"),
])
def test_contradictory_or_unsafe_flags_are_refused_when_parsed(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert message in usage_error(train.parse_args, argv, capsys)


def test_auto_precision_is_recorded_with_its_reason_and_a_resumed_run_keeps_it(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setattr(gan_step, "auto_precision", lambda: ("bf16", "CPU has AVX512_BF16"))
    assert _train(tmp_path, tiny_dataset, "--epochs", "1") == 0
    run = tmp_path / "outputs" / "run"
    config = json.loads((run / "config.json").read_text())
    assert (config["precision"], config["precision_reason"]) == ("bf16", "CPU has AVX512_BF16")
    # resumed where auto would choose otherwise: the run keeps its precision
    monkeypatch.setattr(gan_step, "auto_precision", lambda: ("fp32", "CPU without native bf16"))
    assert keras.models.load_model(run / "discriminator.keras").compute_dtype == "bfloat16"
    _, config, _ = run_setup.prepare_run(train.parse_args(["--resume", str(run), "--epochs", "2"]))
    assert config["precision"] == "bf16"
    _, config, _ = run_setup.prepare_run(train.parse_args(["--data", tiny_dataset, "--out", str(tmp_path),
                                                       "--batch-size", "16", "--precision", "fp32"]))
    assert (config["precision"], config["precision_reason"]) == ("fp32", "chosen with --precision")


@pytest.mark.parametrize("tf_config, message", [
    ({"cluster": {}, "task": {}}, "the cluster lists no worker or chief"),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}, "index 2 is not one of"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}}, "index -1 is not one of"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, "type 'chief' is not in the cluster"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}, "index None is not one of"),
    ({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}, "must be a list of host:port"),
    ({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}, "'ps' tasks are not for"),
    ([1, 2], "needs a \"cluster\" object"),
])
def test_multiworker_needs_a_cluster_that_holds_this_task(tf_config, message, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert message in usage_error(train.parse_args, ["--strategy", "multiworker"], capsys)


def test_a_cluster_that_holds_this_task_is_taken(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert train.parse_args(["--strategy", "multiworker"]).strategy == "multiworker"


@pytest.mark.parametrize("argv, message", [
    (["--logical-cpus", "1"], "--logical-cpus 1 with --strategy none would change nothing"),
    (["--logical-cpus", "2"], "--logical-cpus 2 with --strategy none would change nothing"),
    (["--r1-every", "16"], "--r1-every 16 spaces out the R1/R2 penalties: it needs --r1 or --r2 GAMMA > 0"),
    (["--r1", "0", "--r1-every", "4"], "it needs --r1 or --r2 GAMMA > 0"),
    (["--minibatch-std-group", "8"], "--minibatch-std-group applies to --minibatch-std only"),
    (["--no-minibatch-std", "--minibatch-std-group", "8"], "applies to --minibatch-std only"),
    (["--dry-run", "--epochs", "5"], "--dry-run trains 2 epochs of one step in a temporary folder: --epochs"),
    (["--dry-run", "--name", "x"], "--name would change nothing"),
])
def test_flags_that_would_change_nothing_are_refused(argv, message, capsys):
    assert message in usage_error(train.parse_args, argv, capsys)


def test_flags_that_take_effect_together_are_taken():
    for argv in (["--r1", "1", "--r1-every", "16"], ["--r2", "1", "--r1-every", "4"], ["--minibatch-std", "--minibatch-std-group", "8"],
                 ["--strategy", "mirrored", "--logical-cpus", "2"], ["--dry-run", "--batch-size", "16"]):
        train.parse_args(argv)


def test_logical_cpus_are_refused_where_mirrored_would_use_gpus(monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"] if kind == "GPU" else [])
    with pytest.raises(data_io.DataError, match="trains on this machine's GPUs instead"):
        run_setup.make_strategy("mirrored", logical_cpus=2)


@pytest.mark.parametrize("flags", [
    ["--loss", "lsgan", "--g-norm", "selfmod", "--g-lr", "1e-3", "--d-lr", "1e-3", "--beta2", "0.99"],
    ["--loss", "rpgan", "--r1", "0.1", "--r2", "0.1", "--r1-every", "2", "--arch", "resnet"],
], ids=["lsgan_selfmod", "rpgan_r1_r2_resnet"])
def test_lsgan_rpgan_r2_selfmod_and_resnet_train_and_resume_exactly(tmp_path, tiny_dataset, flags):
    flags = [*flags, "--precision", "fp32"]
    assert _train(tmp_path, tiny_dataset, "--epochs", "1", *flags) == 0
    run = tmp_path / "outputs" / "run"
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), "--name", "straight",
                       *TINY_TRAIN_FLAGS, "--epochs", "2", *flags]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["label_smoothing"] == 0.0  # best's smoothing is a bce option: not recorded as applied
    assert (config["loss"], config["r2"], config["g_norm"], config["arch"]) == (
        flags[1], 0.1 if "--r2" in flags else 0.0, "selfmod" if "selfmod" in flags else "batch",
        "resnet" if "resnet" in flags else "dcgan")
    resumed, straight = np.load(run / "steps.npz"), np.load(tmp_path / "outputs" / "straight" / "steps.npz")
    assert np.isfinite(resumed["d_loss"]).all() and len(resumed["d_loss"]) == 4
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_array_equal(resumed[key], straight[key])
    generator = keras.models.load_model(run / "generator.keras")
    faces = np.asarray(generator(np.random.default_rng(0).standard_normal((2, 100)).astype("float32")))
    assert faces.shape == (2, 32, 32, 3) and np.isfinite(faces).all()


@pytest.mark.parametrize("argv, message", [
    (["--loss", "lsgan", "--label-smoothing", "0.1"], "--label-smoothing applies to the bce loss only"),
    (["--arch", "resnet", "--spectral-norm"], "--arch resnet has no batch norm"),
    (["--arch", "resnet", "--g-norm", "selfmod"], "--arch resnet has no batch norm"),
])
def test_options_that_need_the_papers_batch_norm_or_loss_are_refused_elsewhere(argv, message, capsys):
    assert message in usage_error(train.parse_args, argv, capsys)
