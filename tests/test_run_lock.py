"""One process per run directory: while train.py works on a run, a second train.py, an export, an evaluation or a
generate.py that writes into it is refused in one line (exit 2); a process killed with -9 leaves no lock behind."""
import os
import signal
import subprocess
import sys

import pytest

from facegan import run_lock
import evaluate
import export
import generate
import train
from conftest import PAPER_RECIPE, ROOT, TINY_TRAIN_FLAGS, wait_for_checkpoint


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_lock_names_its_holder_and_leaves_no_file_once_released(tmp_path):
    with run_lock.hold(str(tmp_path), "train.py"):
        with pytest.raises(run_lock.RunInUse, match=rf"is in use by pid {os.getpid()} \(train\.py\)"):
            with run_lock.hold(str(tmp_path), "export.py"):
                pass
    assert os.listdir(tmp_path) == []
    with run_lock.hold(str(tmp_path)):  # released: free again
        pass


def test_a_run_in_training_is_refused_to_every_other_writer_and_a_killed_trainer_leaves_it_free(
        tmp_path, tiny_dataset, capsys):
    run = tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--data", tiny_dataset,
                                *TINY_TRAIN_FLAGS, *PAPER_RECIPE, "--out", str(tmp_path), "--name", "run",
                                "--epochs", "100000", "--precision", "fp32"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(run, 2, trainer)  # generator.keras is written before the first checkpoint
        for main, argv in ((train.main, ["--resume", str(run), "--epochs", "100001"]),
                           (export.main, [str(run), "--formats", "onnx", "--no-web"]),
                           (evaluate.main, [str(run), "--n", "20", "--no-quality"]),
                           (generate.main, ["sample", str(run), "--n", "4"])):
            assert main(argv) == 2
            assert f"{run} is in use by pid {trainer.pid} (train.py)" in _one_line(capsys.readouterr().err)
        # writing elsewhere only reads the run: allowed
        assert generate.main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "elsewhere")]) == 0
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    assert generate.main(["sample", str(run), "--n", "4"]) == 0  # the killed process's lock went with it
    assert (run / "generated" / "samples.npy").exists()
