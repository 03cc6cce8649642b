"""The codebase's shape as a newcomer meets it: commands at the top, settings from one table, short --help, and
checkpoint pruning that never loses what a run can resume from."""
import ast
import glob
import os
import re
import sys

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


COMMANDS = ("preprocess", "train", "evaluate", "generate", "export", "random_baseline", "benchmark", "ablation",
            "hypergan_baseline", "inception", "models")
GENERATE_COMMANDS = ("sample", "interpolate", "progress", "arithmetic", "neighbours")


def _help(command, argv, capsys, monkeypatch):
    """What `python COMMAND.py *argv --help` prints."""
    import importlib
    module = importlib.import_module(command)
    with pytest.raises(SystemExit):
        if command == "models":  # its main() reads sys.argv
            monkeypatch.setattr(sys, "argv", ["models.py", *argv, "--help"])
            module.main()
        else:
            module.main([*argv, "--help"])
    return capsys.readouterr().out


def _help_entries(text):
    """The help's entries, one per argument: each a list of its lines."""
    entries, in_section = [], False
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):  # a section's heading
            in_section = line in ("options:", "positional arguments:")
        elif in_section and re.match(r"^  \S", line):
            entries.append([line])
        elif in_section and entries and re.match(r"^ {3,}\S", line):
            entries[-1].append(line)
    return entries


def _docs_section(name):
    """docs/flags.md's section on `name` (## name ... up to the next ## heading)."""
    text = open(os.path.join(ROOT, "docs", "flags.md")).read()
    sections = {part.split("\n", 1)[0].strip(): part for part in text.split("\n## ")[1:]}
    return sections[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_is_one_line_per_flag_and_docs_flags_explains_each(command, capsys, monkeypatch):
    helps = [_help(command, [], capsys, monkeypatch)]
    if command == "generate":
        helps += [_help(command, [sub], capsys, monkeypatch) for sub in GENERATE_COMMANDS]
    docs = _docs_section(f"{command}.py")
    for text in helps:
        assert len(text.split("\n\n")[0].splitlines()) <= 2, text  # the usage line(s)
        for entry in _help_entries(text):
            # the help on the flag's line, or on the next when the flag and its values fill the flag column
            help_lines = entry[1:] if re.fullmatch(r"  \S.*?\S", entry[0]) and "  " not in entry[0].strip() else entry
            assert len(help_lines) == 1, "\n".join(entry)
            flags = [word for word in re.findall(r"(?:^|, )(--[\w-]+)", entry[0].strip()) if word != "--help"]
            for flag in flags:
                assert re.search(f"`{re.escape(flag)}[ `,]", docs), f"docs/flags.md: {command}.py {flag}"


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
