"""The codebase's shape as a newcomer meets it: commands at the top, settings from one table, short --help, and
checkpoint pruning that never loses what a run can resume from."""
import ast
import glob
import os

import numpy as np
import pytest

from conftest import ROOT
from facegan import history as history_log
from facegan import run_state
from facegan import settings
import train


def test_the_top_level_holds_commands_that_import_no_other_command():
    commands = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    for name in commands:
        tree = ast.parse(open(os.path.join(ROOT, name + ".py")).read())
        assert any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body), name
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert imported & commands <= {"models"}, f"{name}.py imports {imported & commands - {'models'}}"


def test_train_help_fits_two_screens_with_one_line_per_flag(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 80
    for key, *_ in settings.SETTINGS:
        assert any(line.lstrip().startswith(settings.flag(key)) for line in lines), key


def test_every_setting_is_a_flag_a_config_check_and_a_resume_rule():
    args = train.parse_args([])
    checks = settings.config_checks()
    for key, default, kind, on_resume, help_text in settings.SETTINGS:
        assert getattr(args, key) == default and "\n" not in help_text
        assert on_resume in ("kept", "honoured", "new", "input")
        if on_resume != "input":
            accepts, _ = checks[key]
            assert not accepts(["a list"]) and not accepts({"an": "object"}), key
    assert set(settings.KEPT_ON_RESUME).isdisjoint(settings.HONOURED_ON_RESUME)
    assert checks["lr"][0](2e-4) and not checks["lr"][0](-1.0) and not checks["lr"][0]("2e-4")
    assert checks["batch_size"][0](64) and not checks["batch_size"][0](64.0) and not checks["batch_size"][0](True)
    assert checks["diffaug"][0]("translation,flip") and not checks["diffaug"][0]("rotate")
    assert checks["d_lr"][0](None) and not checks["lr"][0](None)  # null only where the default is


def test_a_new_runs_default_folder_names_its_dataset_and_preset(tmp_path, tiny_dataset):
    from facegan import run_setup
    for preset in ("best", "dcgan"):
        run_dir, _, _ = run_setup.prepare_run(train.parse_args(["--data", tiny_dataset, "--out", str(tmp_path),
                                                                "--preset", preset, "--batch-size", "16"]))
        assert os.path.basename(run_dir).endswith(f"_tiny_{preset}")


def _history(steps):
    history = history_log.new_history()
    for _ in range(steps):
        history_log.record_step(history, {key: 0.5 for key in history_log.STEP_KEYS})
    return history


def test_pruning_keeps_the_checkpoint_just_written_and_sets_aside_a_damaged_later_one(tmp_path):
    import keras
    from conftest import flip_a_byte_inside
    variables = {"g/0000": keras.Variable(np.arange(4, dtype=np.float32))}
    run = str(tmp_path)
    for steps in (2, 4):
        run_state.save_checkpoint(run, variables, _history(steps), keep=2)
    flip_a_byte_inside(os.path.join(run, "checkpoints", "step_000000004.npz"))
    path, history = run_state.load_latest_checkpoint(run, variables)  # falls back to step 2
    assert path.endswith("step_000000002.npz")
    # the resumed run is stopped after one more step, with --keep-checkpoints 1
    written = run_state.save_checkpoint(run, variables, _history(3), keep=1)
    assert run_state.checkpoint_names(run) == ["step_000000003.npz"]
    assert run_state.load_latest_checkpoint(run, variables)[0] == written
    assert os.path.exists(os.path.join(run, "checkpoints", "step_000000004.npz.damaged"))
