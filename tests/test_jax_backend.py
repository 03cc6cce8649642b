"""train.py and gan_step.py on the JAX backend, each in a subprocess with KERAS_BACKEND=jax (Keras picks its
backend at import; this process is TensorFlow)."""
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from facegan import gan_step
from facegan import presets
import train
from conftest import TINY_TRAIN_FLAGS

# one test process (pytest -n) runs them all, so the shared JAX process below runs once
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"),
              pytest.mark.xdist_group("jax")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Both steps see this recipe with the same weights, batch and noise. No DiffAugment: its random draws differ
# between the backends' generators.
_TINY = dict(latent_dim=16, image_size=32, g_width=8, d_width=8, ema=0.9)
SAME_STEP_RECIPES = {
    "bce": dict(_TINY, label_smoothing=0.1, mode_seeking=3.0, r1=1.0, r1_every=2, lecam=0.3),
    "rpgan_selfmod": dict(_TINY, loss="rpgan", r1=1.0, r2=1.0, r1_every=2, g_norm="selfmod", upsample="resize"),
    "lsgan_resnet": dict(_TINY, loss="lsgan", arch="resnet", beta2=0.99),
}


def run_on_jax(code, tmp_path):
    """Run Python `code` in a JAX-backend process (compilations cached in tmp_path)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# colour DiffAugment with the mode-seeking term: XLA on CPU once gave NaN gradients for the pair
RESUME_FLAGS = [*TINY_TRAIN_FLAGS, "--preset", "best", "--lecam", "0.3", "--bcr", "1", "--diffaug", "color,translation"]


@pytest.fixture(scope="module")
def jax_process(tmp_path_factory, tiny_faces):
    """One JAX-backend process does the work of every test below (its start-up and compilations are most of
    their time): a training run, the same run stopped and resumed, two steps of the shared recipe from saved
    inputs, the FID network's features of two images, and benchmark.py's JAX path in fp16."""
    tmp = tmp_path_factory.mktemp("jax")
    np.save(tmp / "tiny_train.npy", tiny_faces[:64])
    np.save(tmp / "tiny_holdout.npy", tiny_faces[64:])
    rng = np.random.default_rng(0)
    np.savez(tmp / "inputs.npz", real=rng.integers(0, 256, (16, 32, 32, 3), np.uint8),
             z=rng.standard_normal((16, 16)).astype(np.float32))
    flags = ["--data", str(tmp / "tiny_train.npy"), "--out", str(tmp), *RESUME_FLAGS]
    straight, split, damaged = tmp / "straight", tmp / "split", tmp / "damaged"
    result = run_on_jax(f"""
import os, shutil
import numpy as np
from facegan import gan_step, presets
import benchmark, train
# two epochs; then the same run stopped after epoch 1 (its newer checkpoint removed) and resumed
assert train.main([*{flags!r}, "--name", "straight", "--epochs", "2"]) == 0
shutil.copytree({str(straight)!r}, {str(split)!r})
os.remove(os.path.join({str(split)!r}, "checkpoints", "step_000000004.npz"))
assert train.main(["--resume", {str(split)!r}, "--epochs", "2"]) == 0
# the same run with one byte flipped inside its newest checkpoint, resumed from the one before
import sys; sys.path.insert(0, "tests"); from conftest import flip_a_byte_inside
shutil.copytree({str(straight)!r}, {str(damaged)!r})
flip_a_byte_inside(os.path.join({str(damaged)!r}, "checkpoints", "step_000000004.npz"), "d_opt/0003.npy")
assert train.main(["--resume", {str(damaged)!r}, "--epochs", "2"]) == 0

# two steps of each shared recipe, with the initial weights saved for the TensorFlow side
inputs = np.load({str(tmp / "inputs.npz")!r})
sample_noise, gan_step.sample_noise = gan_step.sample_noise, lambda batch_size, recipe, nets: inputs["z"]
for name, changes in {SAME_STEP_RECIPES!r}.items():
    recipe = presets.recipe(**changes)
    nets = gan_step.build_models(recipe)
    weights = {{f"{{net}}/{{i}}": v.numpy() for net in ("generator", "discriminator")
                for i, v in enumerate(nets[net].variables)}}
    step = gan_step.build_jax_train_step(nets, recipe, inputs["real"])
    state, losses = gan_step.jax_state(nets), []
    for _ in range(2):
        state, logs = step(state, np.arange(16))
        losses.append([float(logs[key]) for key in ("d_loss", "g_loss", "d_real", "d_fake", "ada_p")])
    np.savez(os.path.join({str(tmp)!r}, f"jax_step_{{name}}.npz"), losses=np.array(losses), **weights)
gan_step.sample_noise = sample_noise

# the FID network's features of two images, when its converted weights are here (the TensorFlow side compares)
from facegan import metrics
from facegan import inception
try:
    np.save({str(tmp / "fid_features.npy")!r},
            metrics.inception_features(inputs["real"][:2], inception.load_fid_inception()))
except inception.WeightsUnavailable:
    pass

# last, since it sets the global fp16 policy
assert benchmark.main(["--backend", "jax", "--precisions", "fp16", "--batches", "4", "--warmup", "1", "--steps",
                       "1", "--epoch-images", "10", "--out", {str(tmp / "bench.json")!r}]) == 0
""", tmp)
    (tmp / "stdout.txt").write_text(result.stdout)
    return tmp


def test_jax_run_resumes_bit_exactly_and_saves_a_generator_tensorflow_loads(jax_process, capsys):
    straight, split = jax_process / "straight", jax_process / "split"
    straight_steps, split_steps = np.load(straight / "steps.npz"), np.load(split / "steps.npz")
    assert len(split_steps["g_loss"]) == 4
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):  # EMA, seeds and LeCam anchors all checkpointed
        np.testing.assert_array_equal(split_steps[key], straight_steps[key])
    config = json.loads((split / "config.json").read_text())
    assert config["backend"] == "jax" and config["ema"] == 0.999
    assert sorted(os.listdir(straight / "samples")) == ["epoch_001.png", "epoch_002.png"]
    # the saved generator is plain Keras: this TensorFlow process samples faces from it
    generator = keras.models.load_model(split / "generator.keras")
    faces = np.asarray(generator(np.random.default_rng(0).standard_normal((4, 100)).astype("float32")))
    assert faces.shape == (4, 32, 32, 3) and np.isfinite(faces).all()
    # a JAX run does not continue on TensorFlow
    capsys.readouterr()
    assert train.main(["--resume", str(split), "--epochs", "3"]) == 2
    assert "trained with KERAS_BACKEND=jax" in capsys.readouterr().err


@pytest.mark.parametrize("name", SAME_STEP_RECIPES)
def test_jax_and_tensorflow_steps_compute_the_same_losses(jax_process, monkeypatch, name):
    inputs, saved = np.load(jax_process / "inputs.npz"), np.load(jax_process / f"jax_step_{name}.npz")
    recipe = presets.recipe(**SAME_STEP_RECIPES[name])
    nets = gan_step.build_models(recipe)
    for net in ("generator", "discriminator"):  # the JAX run's initial weights
        for i, variable in enumerate(nets[net].variables):
            variable.assign(saved[f"{net}/{i}"])
    monkeypatch.setattr(gan_step, "sample_noise", lambda batch_size, recipe, nets: inputs["z"])
    step = gan_step.build_train_step(nets, recipe)
    losses = [[float(v) for v in step(inputs["real"]).values()] for _ in range(2)]
    # step 1's g_loss goes through the updated D, step 2's losses through both updated networks; step 1 takes
    # the (lazy) R1 penalty and the LeCam one from zero anchors, step 2 LeCam from the anchors step 1 left
    np.testing.assert_allclose(saved["losses"], losses, rtol=2e-4, atol=1e-5)


def test_jax_computes_the_fid_features_tensorflow_does(jax_process):
    if not (jax_process / "fid_features.npy").exists():
        pytest.skip("the converted FID Inception weights are not here (python inception.py)")
    from facegan import inception
    from facegan import metrics
    images = np.load(jax_process / "inputs.npz")["real"][:2]
    np.testing.assert_allclose(np.load(jax_process / "fid_features.npy"),
                               metrics.inception_features(images, inception.load_fid_inception()), rtol=1e-4, atol=1e-4)


def test_jax_benchmark_trains_an_epoch_in_fp16_with_loss_scaling(jax_process):
    # the GPU benchmark path; fp16 only, the training tests above cover the fp32 step
    rows = {row["precision"]: row for row in json.loads((jax_process / "bench.json").read_text())["rows"]}
    assert set(rows) == {"fp16"}
    row = rows["fp16"]
    assert row["backend"] == "jax" and row["images_per_second"] > 0
    assert row["epoch_images"] == 8  # the last partial batch is dropped, as in train.py
    assert np.all(np.isfinite(row["epoch_final_losses"]))
    # dynamic loss scaling: a power of two, halved from 2**15 only on overflow, never zero
    scale = row["final_loss_scale"]
    assert 1 <= scale <= 2 ** 15 and np.log2(scale) == int(np.log2(scale))


def test_jax_run_falls_back_from_a_damaged_checkpoint_and_resumes_bit_exactly(jax_process):
    assert ("Bad CRC-32 for file 'd_opt/0003.npy'; falling back to the previous intact checkpoint, "
            "step_000000002.npz") in (jax_process / "stdout.txt").read_text()
    straight, damaged = np.load(jax_process / "straight" / "steps.npz"), np.load(jax_process / "damaged" / "steps.npz")
    assert len(damaged["g_loss"]) == 4
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_array_equal(damaged[key], straight[key])
