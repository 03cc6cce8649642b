"""A run directory made by an older facegan (15e96f4: before the facegan/ package, and before the r2, g_norm and
arch settings existed) still resumes bit for bit on both backends, evaluates, generates and exports.

tests/fixtures/run_15e96f4/ holds a tiny run of each backend trained 2 epochs by that code (config.json,
history.json, checkpoints, .keras files), its data (tiny_train.npy, tiny_holdout.npy: demo faces 0-31 and 32-47
of make_demo_faces(96, size=32, seed=3)), and <backend>_epoch3_steps.npz: every step's logs of the same run
resumed to epoch 3 by that code."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import evaluate
import export
import generate
import train
from conftest import ROOT

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run_15e96f4")
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "ada_p")


def old_run(tmp_path, backend):
    """A copy of the old run of `backend`, its config.json pointed at the copied training and held-out arrays
    (it names the folder it was made in)."""
    for name in ("tiny_train.npy", "tiny_holdout.npy"):
        shutil.copy(os.path.join(FIXTURE, name), tmp_path / name)
    run = shutil.copytree(os.path.join(FIXTURE, backend), tmp_path / backend)
    config = json.loads((run / "config.json").read_text())
    assert not {"r2", "g_norm", "arch"} & set(config)  # saved before these settings existed
    config.update(data=str(tmp_path / "tiny_train.npy"), holdout=str(tmp_path / "tiny_holdout.npy"))
    (run / "config.json").write_text(json.dumps(config, indent=2))
    return run


def assert_resumed_as_recorded(run, backend):
    """The resumed run's every step, epochs 1-3, as the old code logged them resuming the same run."""
    with np.load(run / "steps.npz") as resumed, np.load(os.path.join(FIXTURE, f"{backend}_epoch3_steps.npz")) as old:
        assert len(resumed["d_loss"]) == len(old["d_loss"]) == 6  # 2 steps per epoch
        for key in STEP_KEYS:
            np.testing.assert_allclose(resumed[key], old[key], rtol=1e-5, err_msg=key)
    assert json.loads((run / "history.json").read_text())["epoch"] == 3


def test_an_old_tensorflow_run_resumes_bit_for_bit(tmp_path):
    run = old_run(tmp_path, "tensorflow")
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    assert_resumed_as_recorded(run, "tensorflow")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_an_old_jax_run_resumes_bit_for_bit(tmp_path):
    run = old_run(tmp_path, "jax")
    # Keras picks its backend at import, and this process is TensorFlow's
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache")}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--resume", str(run), "--epochs", "3"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed_as_recorded(run, "jax")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_an_old_run_evaluates_generates_and_exports(tmp_path, tiny_faces, quick_judge, backend):
    run = old_run(tmp_path, backend)
    # its own holdout has 16 images, fewer than evaluate.py needs: demo faces it never trained on
    np.save(tmp_path / "unseen.npy", tiny_faces[32:])
    assert evaluate.main([str(run), "--real", str(tmp_path / "unseen.npy"), "--n", "20", "--no-quality"]) == 0
    rows = json.loads((run / "eval" / "metrics.json").read_text())["systems"]
    assert [row["system"] for row in rows] == ["real (held out)", backend, "random uniform"]
    assert generate.main(["sample", str(run), "--n", "4", "--format", "npy"]) == 0
    faces = np.load(run / "generated" / "samples.npy")
    assert faces.shape == (4, 32, 32, 3) and faces.dtype == np.uint8 and faces.std() > 0
    assert export.main([str(run), "--formats", "onnx", "--no-web"]) == 0
    assert json.loads((run / "export" / "generator.json").read_text())["latent_dim"] == 8
