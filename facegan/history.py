"""A run's loss history: the one owner of the dict that holds it. Every change to it is a function here.

Per step: d_loss, g_loss, mean D(x), mean D(G(z)), ADA's p. Per epoch: their means, the epoch's step count,
seconds and images/s, and the share of held-out and of training reals D calls real. A checkpoint holds the
whole history; history.json the per-epoch part, beside d_losses.npy, g_losses.npy and steps.npz.
"""
import json
import os

import numpy as np

from facegan import data_io

# per step: losses, mean D(x), mean D(G(z)), the adaptive augmentation probability (0 without ADA)
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "ada_p")
EPOCH_KEYS = ("d_losses", "g_losses", "d_real_epoch", "d_fake_epoch", "ada_p_epoch")  # their per-epoch means


def new_history():
    history = {key: [] for key in STEP_KEYS + EPOCH_KEYS}
    history.update(epoch=0, epoch_steps=[], epoch_seconds=[], images_per_second=[], d_holdout_accuracy=[],
                   d_train_accuracy=[])
    return history


def check_history(history, what, per_step=False):
    """Raise DataError unless `history` is a whole one as record_epoch leaves it: one entry per closed epoch
    in each per-epoch list, and with `per_step` (a checkpoint's), per-step lists of equal length that hold
    the epochs' step counts. Lists a history was saved without, before they existed, are not asked for."""
    def fail(problem):
        raise data_io.DataError(f"{what} is damaged: {problem}")
    if not isinstance(history, dict):
        fail(f"a JSON {type(history).__name__}, not an object")
    epoch = history.get("epoch")
    if type(epoch) is not int or epoch < 0:
        fail(f"'epoch' is {epoch!r}, not an epoch count")
    for key in STEP_KEYS + EPOCH_KEYS + ("epoch_steps", "epoch_seconds", "images_per_second"):
        values = history.get(key, [])
        if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
            fail(f"{key!r} is not a list of numbers")
    for key in EPOCH_KEYS + ("epoch_steps", "epoch_seconds", "images_per_second"):
        if key in history and len(history[key]) != epoch:
            fail(f"{key!r} has {len(history[key])} entries for {epoch} epochs")
    if any(type(n) is not int or n < 0 for n in history.get("epoch_steps", [])):
        fail("'epoch_steps' is not a list of step counts")
    if per_step:
        required = STEP_KEYS[:4]  # ada_p came later: a history without it had no ADA
        if not all(key in history for key in required):
            fail(f"it lacks some of {', '.join(required)}")
        steps = len(history["d_loss"])
        if any(len(history[key]) != steps for key in STEP_KEYS if key in history):
            fail("its per-step lists differ in length")
        if sum(history.get("epoch_steps", [])) > steps:
            fail("'epoch_steps' counts more steps than it recorded")


def read_history(run_dir):
    """history.json of a run (the per-epoch record save_history writes), checked; None when the run has
    not finished an epoch yet."""
    path = os.path.join(run_dir, "history.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            history = json.load(f)
    except (ValueError, OSError) as error:
        raise data_io.DataError(f"cannot read {path}: {error}") from None
    check_history(history, path)
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


def record_step(history, logs):
    """Append one step's logs (a dict with STEP_KEYS, as the training step returns them)."""
    for key in STEP_KEYS:
        history[key].append(float(logs[key]))


def record_memorisation(history, holdout_accuracy, train_accuracy):
    """The share of held-out and of training reals D called real after the epoch (None: not measured); a D
    that calls its training reals real but not unseen ones is memorising them (Karras et al. 2020)."""
    history["d_holdout_accuracy"].append(holdout_accuracy)
    history["d_train_accuracy"].append(train_accuracy)
