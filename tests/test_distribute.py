"""tf.distribute scale-out, tested on CPU split into 2 logical devices (in a subprocess: the split must
happen before TensorFlow starts)."""
import json
import os
import subprocess
import sys

import numpy as np

import train
from facegan import run_setup
from conftest import ROOT, TINY_TRAIN_FLAGS


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, tiny_dataset):
    out = str(tmp_path / "outputs")
    # with lazy R1 (the step count read on the host) and LeCam (anchors averaged over the replicas)
    common = ["--data", tiny_dataset, "--out", out, *TINY_TRAIN_FLAGS, "--epochs", "2", "--r1", "1", "--r1-every", "2",
              "--lecam", "0.3", "--precision", "fp32",  # this process and the child compute alike
              "--preset", "dcgan"]  # no DiffAugment: each replica draws its own shifts
    assert train.main(common + ["--name", "single"]) == 0
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *common, "--name", "mirrored",
                             "--strategy", "mirrored", "--logical-cpus", "2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "outputs" / "mirrored" / "config.json").read_text())
    assert config["replicas"] == 2 and config["strategy"] == "mirrored"
    single = np.load(tmp_path / "outputs" / "single" / "steps.npz")
    mirrored = np.load(tmp_path / "outputs" / "mirrored" / "steps.npz")
    # Each replica trains on half of the global batch of 16 with synchronized batch norm, and the losses
    # are reduced over replicas: the same updates as one device, up to float rounding.
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=2e-3, atol=1e-4, err_msg=key)
    assert (tmp_path / "outputs" / "mirrored" / "generator.keras").exists()


def test_batch_that_does_not_split_over_the_replicas_is_a_clear_error(tmp_path, tiny_dataset, monkeypatch, capsys):
    class TwoReplicas:  # what make_strategy gives on two devices, as far as the check looks
        num_replicas_in_sync = 2
        cluster_resolver = None
    monkeypatch.setattr(run_setup, "make_strategy", lambda name, logical_cpus: TwoReplicas())
    assert train.main(["--data", tiny_dataset, "--out", str(tmp_path / "outputs"), *TINY_TRAIN_FLAGS,
                       "--batch-size", "15", "--strategy", "mirrored"]) == 2
    assert "does not split evenly over 2 replicas" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # refused before the run directory is made


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_multiworker_with_two_local_workers_matches_one_device(tmp_path, tiny_dataset):
    out = str(tmp_path / "outputs")
    # with lazy R1 (the step count read on the host) and LeCam (anchors averaged over the replicas)
    common = ["--data", tiny_dataset, "--out", out, *TINY_TRAIN_FLAGS, "--epochs", "2", "--r1", "1", "--r1-every", "2",
              "--lecam", "0.3", "--precision", "fp32",  # this process and the child compute alike
              "--preset", "dcgan"]  # no DiffAugment: each replica draws its own shifts
    assert train.main(common + ["--name", "single"]) == 0
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *common, "--name", "mw",
                                           "--strategy", "multiworker"], env=env, cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    # worker 0 wrote the run; worker 1 only trained (its scratch folder is gone)
    assert sorted(os.listdir(tmp_path / "outputs")) == ["mw", "single"]
    single = np.load(tmp_path / "outputs" / "single" / "steps.npz")
    multi = np.load(tmp_path / "outputs" / "mw" / "steps.npz")
    for key in ("d_loss", "g_loss"):
        np.testing.assert_allclose(multi[key], single[key], rtol=2e-3, atol=1e-4, err_msg=key)
