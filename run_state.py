"""A run's state on disk: its config.json, its loss history and its checkpoints.

A run directory holds config.json (the settings), history.json with d_losses.npy / g_losses.npy / steps.npz
(the losses so far) and checkpoints/step_<global step>.npz (every variable its future depends on, plus the
history). Checkpoints are written atomically; reading falls back to an older one when the newest is damaged.
"""
import json
import os
import sys
import zipfile

import numpy as np

import data_io

# per step: losses, mean D(x), mean D(G(z)), the adaptive augmentation probability (0 without ADA)
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "ada_p")
EPOCH_KEYS = ("d_losses", "g_losses", "d_real_epoch", "d_fake_epoch", "ada_p_epoch")  # their per-epoch means
# Settings whose default changed after runs were saved without them: such a run keeps what it ran with.
# (Minibatch std took the whole batch before --minibatch-std-group existed; runs ran in fp32 before
# --precision auto.)
LEGACY_DEFAULTS = {"minibatch_std_group": 0, "precision": "fp32"}


# ----- config.json ---------------------------------------------------------------------------------------

def load_config(run_dir, defaults=None, required=()):
    """A run directory's config.json. With `defaults`, keys the run was saved without are filled in once:
    from LEGACY_DEFAULTS where the default has changed since, else from `defaults`; a saved value of another
    type than its default's is refused. `required`: keys the file must have."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise data_io.DataError(f"no such run directory: {run_dir}")
    if not os.path.isfile(path):
        raise data_io.DataError(f"{run_dir} is not a run directory (no config.json)")
    try:
        with open(path) as f:
            config = json.load(f)
    except (ValueError, OSError) as error:
        raise data_io.DataError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise data_io.DataError(f"cannot read {path}: it holds a JSON {type(config).__name__}, not an object")
    for key in required:
        if key not in config:
            raise data_io.DataError(f"{path} has no {key!r}; is it from train.py?")
    if defaults is not None:
        for key, value in config.items():
            if not _same_kind(value, defaults.get(key)):
                raise data_io.DataError(f"{path}: {key!r} is {value!r}, not a {type(defaults[key]).__name__} "
                                        "like its default; the file is damaged")
        config = {**defaults, **{k: v for k, v in LEGACY_DEFAULTS.items() if k in defaults}, **config}
    return config


def _same_kind(value, default):
    """Whether a saved value can stand where `default` does (None on either side passes; ints pass for floats)."""
    if value is None or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_resume_settings(config, given):
    """Refuse settings given on the command line that differ from the run's: a resumed run keeps them."""
    for key, value in given.items():
        if value is not None and value != config.get(key):
            raise data_io.DataError(f"--{key.replace('_', '-')} {value} differs from the run's {config.get(key)}; "
                                    "a resumed run keeps its settings (start a new run to change them)")


def check_resume_data(run_dir, config, data_path, count, fingerprint, allow_change):
    """Refuse training data other than the run's (another size or other pixels than config.json's train_count
    and data_fingerprint) unless `allow_change`; then record what the run continues on. A run saved without a
    fingerprint continues on its own data file with a warning that it could not be verified."""
    recorded = config.get("data_fingerprint")
    same_path = os.path.abspath(data_path) == os.path.abspath(config["data"])
    if recorded is None and same_path:
        print(f"warning: {run_dir} records no fingerprint of its training data, so {data_path} could not be "
              "verified to be the data it trained on", file=sys.stderr)
    elif recorded != fingerprint and not allow_change:
        then = config.get("train_count")
        what = (f"{count} images now, {then} when it trained" if count != then else
                "the same number of images, other pixels" if recorded else "it cannot be verified")
        raise data_io.DataError(f"{data_path} is not the data {run_dir} trained on ({what}); pass "
                                "--allow-data-change to continue on it anyway")
    elif recorded != fingerprint:
        print(f"note: {run_dir} continues on changed data: {count} images (it trained on {config.get('train_count')})")
    config.update(data=os.path.abspath(data_path), train_count=int(count), data_fingerprint=fingerprint)


# ----- history -------------------------------------------------------------------------------------------

def new_history():
    history = {key: [] for key in STEP_KEYS + EPOCH_KEYS}
    history.update(epoch=0, epoch_steps=[], epoch_seconds=[], images_per_second=[], d_holdout_accuracy=[],
                   d_train_accuracy=[])
    return history


def fill_legacy_history(history, steps_per_epoch):
    """A history saved before epochs recorded their step counts (every epoch had the run's steps_per_epoch),
    before ADA's p was recorded (it was 0: there was no ADA), or before D's accuracy on real images was."""
    history.setdefault("epoch_steps", [steps_per_epoch] * history["epoch"])
    history.setdefault("ada_p", [0.0] * len(history["d_loss"]))
    history.setdefault("ada_p_epoch", [0.0] * len(history["d_losses"]))
    for key in ("d_holdout_accuracy", "d_train_accuracy"):  # not measured then
        history.setdefault(key, [None] * history["epoch"])
    return history


def steps_into_epoch(history):
    """Steps taken since the last closed epoch (the next epoch's steps already done)."""
    return len(history["d_loss"]) - sum(history["epoch_steps"])


def record_epoch(history, epoch, steps_run, batch_size, seconds):
    """Close an epoch in the history: the means of its steps (those since the last closed epoch), its step
    count, time and speed (of the `steps_run` this process ran). Returns the means."""
    steps = steps_into_epoch(history)
    means = [float(np.mean(history[key][-steps:])) for key in STEP_KEYS]
    for key, value in zip(EPOCH_KEYS, means):
        history[key].append(value)
    history["epoch"] = epoch
    history["epoch_steps"].append(steps)
    history["epoch_seconds"].append(round(seconds, 3))
    history["images_per_second"].append(round(steps_run * batch_size / seconds, 1) if steps_run > 0 else 0.0)
    return means


def save_history(run_dir, history):
    """d_losses.npy and g_losses.npy (one mean per epoch), steps.npz (every step) and history.json."""
    data_io.save_npy(os.path.join(run_dir, "d_losses.npy"), np.array(history["d_losses"], np.float32))
    data_io.save_npy(os.path.join(run_dir, "g_losses.npy"), np.array(history["g_losses"], np.float32))
    data_io.save_npz(os.path.join(run_dir, "steps.npz"),
                     {key: np.array(history[key], np.float32) for key in STEP_KEYS})
    data_io.save_json(os.path.join(run_dir, "history.json"),
                      {k: v for k, v in history.items() if k not in STEP_KEYS})


# ----- checkpoints ---------------------------------------------------------------------------------------

def state_variables(nets):
    """Every variable a run's future depends on (gan_step.build_models' networks, optimizers and random
    seeds), under stable names."""
    groups = {"g": nets["generator"].variables, "d": nets["discriminator"].variables,
              "g_opt": nets["g_optimizer"].variables, "d_opt": nets["d_optimizer"].variables,
              "noise": [nets["noise_seed"].state]}
    if nets["ema_generator"] is not None:
        groups["g_ema"] = nets["ema_generator"].variables
    if nets["aug_seed"] is not None:
        groups["aug"] = [nets["aug_seed"].state]
    if nets.get("lecam_anchors") is not None:
        groups["lecam"] = [nets["lecam_anchors"]]
    if nets.get("ada_state") is not None:
        groups["ada"] = [nets["ada_state"]]
    return {f"{group}/{i:04d}": v for group, variables in groups.items() for i, v in enumerate(variables)}


def checkpoint_names(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.startswith("step_") and f.endswith(".npz"))


def save_checkpoint(run_dir, variables, history, keep):
    """checkpoints/step_<global step>.npz, written atomically; keeps the newest `keep`."""
    arrays = {name: np.asarray(v.numpy()) for name, v in variables.items()}
    arrays["history"] = np.frombuffer(json.dumps(history).encode(), np.uint8)
    path = os.path.join(run_dir, "checkpoints", f"step_{len(history['d_loss']):09d}.npz")
    data_io.save_npz(path, arrays)
    for old in checkpoint_names(run_dir)[:-keep]:
        os.remove(os.path.join(run_dir, "checkpoints", old))
    return path


def latest_checkpoint(run_dir):
    names = checkpoint_names(run_dir)
    return os.path.join(run_dir, "checkpoints", names[-1]) if names else None


def load_checkpoint(path, variables=None):
    """Assign the saved arrays to the variables (none: only read); returns the saved history."""
    try:
        saved = np.load(path)
        history = json.loads(saved["history"].tobytes().decode())  # a truncated file fails here
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise data_io.DataError(f"cannot read checkpoint {path}: {error}") from None
    if variables is None:
        saved.close()
        return history
    with saved:
        missing = sorted(set(variables) - set(saved.files))
        if missing:
            raise data_io.DataError(f"{path} does not match this model ({len(missing)} variables missing)")
        for name, variable in variables.items():
            if tuple(saved[name].shape) != tuple(variable.shape):
                raise data_io.DataError(f"{path} does not match this model: {name} is {saved[name].shape}, "
                                        f"expected {tuple(variable.shape)}")
            variable.assign(saved[name])
        return history


def load_latest_checkpoint(run_dir, variables=None):
    """(path, history) of the newest readable checkpoint, falling back to older ones; None if there is none.
    Without variables, only the history is read (quietly: the load with variables warns)."""
    names = checkpoint_names(run_dir)
    for i, name in enumerate(reversed(names)):
        path = os.path.join(run_dir, "checkpoints", name)
        try:
            return path, load_checkpoint(path, variables)
        except data_io.DataError as error:
            if "does not match" in str(error) or i == len(names) - 1:
                raise
            if variables is not None:
                    print(f"warning: {error}; falling back to the previous checkpoint", file=sys.stderr)
    return None


def save_model(path, model):
    data_io.atomic_write(path, model.save, suffix=".keras")
