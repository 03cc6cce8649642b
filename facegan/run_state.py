"""A run's state on disk: its config.json and its checkpoints (the loss history is facegan/history.py).

A run directory holds config.json (the settings), history.json with d_losses.npy / g_losses.npy / steps.npz
(the losses so far) and checkpoints/step_<global step>.npz (every variable its future depends on, plus the
history). Checkpoints are written atomically; reading falls back to an older one when the newest is damaged.
"""
import io
import json
import os
import sys
import zipfile
import zlib

import numpy as np

from facegan import data_io
from facegan import history as history_log

# Settings whose default changed after runs were saved without them: such a run keeps what it ran with.
# (Minibatch std took the whole batch before --minibatch-std-group existed; runs ran in fp32 before
# --precision auto.)
LEGACY_DEFAULTS = {"minibatch_std_group": 0, "precision": "fp32"}


# ----- config.json ---------------------------------------------------------------------------------------

def load_config(run_dir, defaults=None, required=(), checks=None):
    """A run directory's config.json, checked: every key that CONFIG_CHECKS (and `checks`, more of the same
    form from the caller) names must hold a value it accepts, wherever the key is present. With `defaults`,
    keys the run was saved without are filled in once: from LEGACY_DEFAULTS where the default has changed
    since, else from `defaults`; a saved value of another type than its default's is refused. `required`:
    keys the file must have. Anything wrong is one DataError naming the file and the key."""
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
    for key, (accepts, what) in [*CONFIG_CHECKS.items(), *(checks or {}).items()]:
        if key in config and not accepts(config[key]):
            raise data_io.DataError(f"{path}: {key!r} is {config[key]!r}, not {what}; the file is damaged or "
                                    "was edited by hand")
    if defaults is not None:
        for key, value in config.items():
            if not _same_kind(value, defaults.get(key)):
                raise data_io.DataError(f"{path}: {key!r} is {value!r}, not a {type(defaults[key]).__name__} "
                                        "like its default; the file is damaged")
        config = {**defaults, **{k: v for k, v in LEGACY_DEFAULTS.items() if k in defaults}, **config}
    return config


def _int_at_least(low):
    return lambda value: type(value) is int and value >= low


# What config.json's keys must hold, for every script that reads a run (train.py --resume adds its flags'
# own checks). A key a run was saved without is not checked here: callers name the keys they need.
CONFIG_CHECKS = {
    "image_size": (lambda value: type(value) is int and value in (32, 64, 128), "an image size of 32, 64 or 128"),
    "latent_dim": (_int_at_least(1), "an integer >= 1"),
    "batch_size": (_int_at_least(1), "an integer >= 1"),
    "epochs": (_int_at_least(1), "an integer >= 1"),
    "steps_per_epoch": (_int_at_least(1), "an integer >= 1"),
    "n_samples": (_int_at_least(1), "an integer >= 1"),
    "train_count": (_int_at_least(0), "an integer >= 0"),
    "replicas": (_int_at_least(1), "an integer >= 1"),
    "data": (lambda value: isinstance(value, str) and value != "", "a file path"),
    "holdout": (lambda value: value is None or (isinstance(value, str) and value != ""), "a file path or null"),
    "data_fingerprint": (lambda value: value is None or (isinstance(value, str) and value.startswith("sha1:")),
                         "a 'sha1:...' fingerprint or null"),
    "precision": (lambda value: value in ("fp32", "bf16", "fp16"), "one of fp32, bf16, fp16"),
    "backend": (lambda value: value in ("tensorflow", "jax"), "tensorflow or jax"),
    "demo": (lambda value: isinstance(value, bool), "true or false"),
    "earlier_data": (lambda value: isinstance(value, list) and all(
        isinstance(entry, dict) and isinstance(entry.get("data"), str) and entry["data"]
        and (entry.get("data_fingerprint") is None or isinstance(entry["data_fingerprint"], str)) for entry in value),
        "a list of {data, data_fingerprint} records"),
}


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
        # what it trained on before stays on record: held-out faces must be none of those either
        config["earlier_data"] = [*config.get("earlier_data", []),
                                  {"data": config["data"], "data_fingerprint": recorded}]
    config.update(data=os.path.abspath(data_path), train_count=int(count), data_fingerprint=fingerprint)


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
    """checkpoints/step_<global step>.npz, written atomically; keeps it and the `keep` - 1 newest before it.
    Checkpoints of later steps than this one are from a future that was given up (a resume fell back past a
    damaged one): they are set aside as .npz.damaged, never left to outrank the one just written."""
    arrays = {name: np.asarray(v.numpy()) for name, v in variables.items()}
    arrays["history"] = np.frombuffer(json.dumps(history).encode(), np.uint8)
    name = f"step_{len(history['d_loss']):09d}.npz"
    path = os.path.join(run_dir, "checkpoints", name)
    data_io.save_npz(path, arrays)
    names = checkpoint_names(run_dir)
    for later in names[names.index(name) + 1:]:
        later_path = os.path.join(run_dir, "checkpoints", later)
        os.replace(later_path, later_path + ".damaged")
    for old in names[:names.index(name) + 1][:-keep]:
        os.remove(os.path.join(run_dir, "checkpoints", old))
    return path


def latest_checkpoint(run_dir):
    names = checkpoint_names(run_dir)
    return os.path.join(run_dir, "checkpoints", names[-1]) if names else None


def read_checkpoint(path, variables=None):
    """(arrays, history) of a checkpoint, every part of it verified before any of it is used: each array read
    whole (the zip's CRC-32 of each checks its bytes), the history a complete one, and with `variables`,
    exactly their names, each with its variable's shape and dtype. Raises DataError saying what is wrong."""
    try:
        size = os.path.getsize(path)
        arrays = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > size:  # train.py stores its arrays uncompressed: no member outgrows its file
                    raise ValueError(f"{info.filename} claims {info.file_size:,} bytes, more than the file holds")
                with archive.open(info) as member:
                    data = io.BytesIO(member.read())
                data_io.npy_header(data, len(data.getvalue()), f"{info.filename} in checkpoint {path}")
                data.seek(0)
                arrays[info.filename[:-4] if info.filename.endswith(".npy") else info.filename] = (
                    np.lib.format.read_array(data, allow_pickle=False))
        if "history" not in arrays:
            raise ValueError("it holds no history")
        history = json.loads(arrays.pop("history").tobytes().decode())
    except (ValueError, OSError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as error:
        raise data_io.DataError(f"cannot read checkpoint {path}: {error}") from None
    history_log.check_history(history, f"the history in {path}", per_step=True)
    if os.path.basename(path) != f"step_{len(history['d_loss']):09d}.npz":
        raise data_io.DataError(f"checkpoint {path} holds the history of step {len(history['d_loss'])}, not its own")
    if variables is not None:
        extra, missing = sorted(set(arrays) - set(variables)), sorted(set(variables) - set(arrays))
        if extra or missing:
            raise data_io.DataError(f"{path} does not match this model ({len(missing)} variables missing, "
                                    f"{len(extra)} not in the model{': ' + extra[0] if extra else ''})")
        for name, variable in variables.items():
            expected = (tuple(variable.shape), np.dtype(_numpy_dtype(variable)))
            if (arrays[name].shape, arrays[name].dtype) != expected:
                raise data_io.DataError(f"{path} does not match this model: {name} is {arrays[name].dtype} "
                                        f"{arrays[name].shape}, expected {expected[1]} {expected[0]}")
    return arrays, history


def _numpy_dtype(variable):
    """The dtype a variable's values have on the host (what save_checkpoint wrote)."""
    return np.asarray(variable.numpy()).dtype


def load_checkpoint(path, variables=None):
    """Verify a checkpoint (read_checkpoint), then assign its arrays to the variables (none: only read);
    returns the saved history."""
    arrays, history = read_checkpoint(path, variables)
    for name, variable in (variables or {}).items():
        variable.assign(arrays[name])
    return history


def load_latest_checkpoint(run_dir, variables=None):
    """(path, history) of the newest intact checkpoint (one that matches the variables, when given), falling
    back to older ones and saying so on stdout; None if there is none. Without variables, only reads
    (quietly: the load with variables tells). When none is intact: one DataError naming each one's damage."""
    names = checkpoint_names(run_dir)
    damaged = []
    for name in reversed(names):
        path = os.path.join(run_dir, "checkpoints", name)
        try:
            history = load_checkpoint(path, variables)
        except data_io.DataError as error:
            damaged.append(str(error))
            continue
        if damaged and variables is not None:
            print(f"warning: {'; '.join(damaged)}; falling back to the previous intact checkpoint, {name}",
                  flush=True)
        return path, history
    if damaged:
        raise data_io.DataError(f"no intact checkpoint in {os.path.join(run_dir, 'checkpoints')}: "
                                + "; ".join(damaged))
    return None


def save_model(path, model, history):
    """model as a .keras file (atomically), with Keras' own layers where the training model has fused ones
    (models.keras_layers_only), so that keras.models.load_model alone reads it; the file records the epochs
    closed and the steps taken when it was saved (`history`'s), in its data_io.MODEL_RECORD member: what
    export.py and evaluate.py report it as."""
    import models
    record = json.dumps({"epoch": history["epoch"], "step": len(history["d_loss"])})

    def write(tmp):
        models.keras_layers_only(model).save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(data_io.MODEL_RECORD, record)
    data_io.atomic_write(path, write, suffix=".keras")
