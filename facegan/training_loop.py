"""The training loop: a run from its first (or resumed) step to its last epoch.

training_loop(run_dir, config, images, ...) reads top to bottom: set up the networks, the history and the step;
then per epoch the steps (a checkpoint on Ctrl-C / SIGTERM and every --checkpoint-every steps), and the epoch's
named side effects: its record, D's memorisation probe, the history files, the sample grid, the saved
generators, the log line and the checkpoint. What one step computes is facegan/gan_step.py.
"""
import contextlib
import os
import shutil
import signal
import tempfile
import time
from typing import Callable, NamedTuple

import numpy as np

from facegan import data_io
from facegan import history as history_log
from facegan import run_state
from facegan import training_data

EXIT_INTERRUPTED, EXIT_DIVERGED = 130, 3
MEMORISATION_PROBE = 512  # held-out and training reals D judges after every epoch


class Diverged(Exception):
    """Training produced NaN/inf losses or a collapsed discriminator."""

    def __init__(self, message, run_dir):
        super().__init__(message)
        self.run_dir = run_dir


def training_loop(run_dir, config, images, strategy=None, chief=True, resume=False):
    """Train the run in run_dir (config and images from run_setup.prepare_run) to config["epochs"]. Only the chief
    of a multi-worker run writes there; the others write to a scratch folder. Returns the exit code (0, or
    EXIT_INTERRUPTED when stopped by a signal after a checkpoint); raises Diverged."""
    # Set up: where to write, the networks and their state, the history, the step.
    out_dir = run_dir if chief else tempfile.mkdtemp(prefix="facegan-worker-")
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    from facegan import gan_step  # Keras: imported when training starts, not when train.py parses its flags
    with strategy.scope() if strategy else contextlib.nullcontext():
        nets = gan_step.build_models(config, distributed=replicas > 1)
    variables = run_state.state_variables(nets)
    history, fixed_noise = start_or_resume(run_dir, out_dir, config, variables, resume)
    config.update(steps_per_epoch=min(len(images) // config["batch_size"], config["max_steps"] or len(images)),
                  replicas=replicas, **versions())
    if on_cpu(config["devices"]):  # the step's memory is this machine's: checked before the step takes it
        data_io.check_memory(images.nbytes + step_memory(nets, config["batch_size"], config["precision"]),
                             f"training at --batch-size {config['batch_size']} on {len(images):,} images",
                             "give a smaller --batch-size")
    data_io.save_json(os.path.join(out_dir, "config.json"), config)
    trainer = make_trainer(nets, config, strategy, images)
    probe = memorisation_probe(config, images)
    writer = tensorboard_writer(config, out_dir)
    print(f"run directory: {run_dir}\ntraining on {len(images):,} images of {config['image_size']}px "
          f"({config['backend']} on {config['devices'][-1]}, {config['precision']}), batch {config['batch_size']}, "
          f"{config['steps_per_epoch']} steps/epoch, epochs {history['epoch'] + 1}..{config['epochs']}")

    # Train, epoch by epoch.
    with StopRequest() as stop:
        for epoch in range(history["epoch"] + 1, config["epochs"] + 1):
            done = history_log.steps_into_epoch(history)  # steps of this epoch already done
            start = time.perf_counter()
            if not run_epoch(trainer, epoch, done, config, history, stop, out_dir, variables):
                save_evaluated_models(out_dir, nets, epoch, history)  # D as checkpointed, for evaluate.py
                print(f"stopped at epoch {epoch} step {history_log.steps_into_epoch(history)}; checkpoint saved. "
                      "Resume with:\n"
                      f"  python train.py --resume {run_dir}")
                return EXIT_INTERRUPTED
            means = history_log.record_epoch(history, epoch, history_log.steps_into_epoch(history) - done,
                                             config["batch_size"], time.perf_counter() - start)
            history_log.record_memorisation(history, *measure_memorisation(nets["discriminator"], probe,
                                                                            config["batch_size"]))
            history_log.save_history(out_dir, history)
            grid = save_grid(out_dir, config, epoch, nets, fixed_noise)
            save_generators(out_dir, config, epoch, nets, history)
            log_epoch(writer, history, means, grid)
            run_state.save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"done: {run_dir} (generator.keras, samples/, d_losses.npy, g_losses.npy)")
    return 0


# ----- setting up ----------------------------------------------------------------------------------------

def versions():
    """Where and with what the run trains, for config.json."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        return {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "keras": keras.__version__}
    import tensorflow as tf
    devices = [d.name for d in tf.config.list_logical_devices()]
    return {"devices": devices, "tensorflow": tf.__version__, "keras": keras.__version__}


def on_cpu(devices):
    """Whether the devices a run trains on (config.json's "devices") are the CPU alone."""
    return not any(kind in name.lower() for name in devices for kind in ("gpu", "tpu", "cuda"))


def step_memory(nets, batch_size, precision):
    """A lower bound on the bytes one training step holds: every layer's output for each image of the batch,
    through G and through D for the real and the fake batch (what the backward pass keeps), in the precision
    the layers compute in."""
    def outputs_per_image(model):
        count = 0
        for layer in model.layers:
            try:
                count += int(np.prod(layer.output.shape[1:]))
            except (AttributeError, ValueError, TypeError):  # a layer without one symbolic output
                pass
        return count
    floats = outputs_per_image(nets["generator"]) + 2 * outputs_per_image(nets["discriminator"])
    return batch_size * floats * (2 if precision in ("bf16", "fp16") else 4)


def start_or_resume(run_dir, out_dir, config, variables, resume):
    """(history, fixed noise of the sample grids): from the newest checkpoint when resuming, else fresh."""
    checkpoint = run_state.load_latest_checkpoint(run_dir, variables) if resume else None
    if checkpoint:
        path, history = checkpoint
        history_log.fill_legacy_history(history, config["steps_per_epoch"])  # the steps per epoch it ran with
        print(f"resuming {run_dir} from {os.path.basename(path)} (epoch {history['epoch']} done, "
              f"{history_log.steps_into_epoch(history)} steps into the next)")
        return history, data_io.load_npy(os.path.join(run_dir, "fixed_noise.npy"))
    if resume:
        print(f"{run_dir} has no checkpoint yet: starting it from epoch 1")
    fixed_noise = np.random.default_rng(config["seed"] + 1).standard_normal(
        (config["n_samples"], config["latent_dim"])).astype(np.float32)
    data_io.save_npy(os.path.join(out_dir, "fixed_noise.npy"), fixed_noise)
    return history_log.new_history(), fixed_noise


class Trainer(NamedTuple):
    """The compiled GAN step on the Keras backend, with its state passed explicitly. state = read_state();
    state, logs = step(state, batch); write_state(state) puts it into the Keras variables (before checkpoints
    and samples). batches(epoch, done): that epoch's batches after the first `done`. On TensorFlow the
    variables are the state (None here); on JAX it lives on the device between steps."""
    step: Callable
    batches: Callable
    read_state: Callable
    write_state: Callable


def make_trainer(nets, config, strategy, images):
    """The Trainer for this backend. TensorFlow: tf.data batches of uint8 images; JAX: the batches' index rows,
    the images held on the device and each batch gathered inside the step."""
    from facegan import gan_step
    order = dict(batch_size=config["batch_size"], seed=config["seed"], steps=config["steps_per_epoch"])
    if run_backend() == "jax":
        import jax
        step = gan_step.build_jax_train_step(nets, config, jax.device_put(images))
        return Trainer(step, lambda epoch, done: training_data.epoch_order(len(images), epoch=epoch, skip_steps=done,
                                                                           **order),
                       lambda: gan_step.jax_state(nets), lambda state: gan_step.write_jax_state(nets, state))
    import tensorflow as tf
    tf_step = gan_step.build_train_step(nets, config, strategy)
    images_tensor = tf.constant(images)
    return Trainer(lambda state, batch: (state, tf_step(batch)),
                   lambda epoch, done: training_data.make_dataset(images_tensor, epoch=epoch, skip_steps=done, **order),
                   lambda: None, lambda state: None)


def run_backend():
    import keras
    return keras.backend.backend()


def tensorboard_writer(config, out_dir):
    if not config["tensorboard"]:
        return None
    import tensorflow as tf
    return tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))


# ----- one epoch -----------------------------------------------------------------------------------------

def run_epoch(trainer, epoch, done, config, history, stop, out_dir, variables):
    """Train on the epoch's batches after the `done` first. Returns False when stopped by a signal (after a
    checkpoint), True otherwise, the step's state written into the variables; raises Diverged on a non-finite
    loss or a collapsed discriminator."""
    from tqdm import tqdm
    steps, start = config["steps_per_epoch"], time.perf_counter()
    bar = tqdm(trainer.batches(epoch, done), total=steps, initial=done, desc=f"epoch {epoch}/{config['epochs']}",
               unit="step", dynamic_ncols=True, mininterval=1.0)
    state = trainer.read_state()
    for step, batch in enumerate(bar, done + 1):
        state, logs = trainer.step(state, batch)
        history_log.record_step(history, logs)
        check_health(history, config["collapse_steps"], f"epoch {epoch} step {step}", out_dir)
        if step % 5 == 0 or step == steps:
            show_progress(bar, history, config, (step - done) * config["batch_size"] / (time.perf_counter() - start))
        every = config["checkpoint_every"]
        if stop.signal is not None or (every and len(history["d_loss"]) % every == 0):
            trainer.write_state(state)
            run_state.save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
        if stop.signal is not None:
            bar.close()
            return False
    bar.close()
    trainer.write_state(state)
    return True


def show_progress(bar, history, config, images_per_second):
    ada = {"p": f"{history['ada_p'][-1]:.3f}"} if config["ada_target"] else {}
    bar.set_postfix(d_loss=f"{history['d_loss'][-1]:.3f}", g_loss=f"{history['g_loss'][-1]:.3f}",
                    D_x=f"{history['d_real'][-1]:.2f}", D_Gz=f"{history['d_fake'][-1]:.2f}", **ada,
                    img_s=f"{images_per_second:.0f}", refresh=False)


def check_health(history, collapse_steps, where, run_dir):
    """Raise Diverged on a non-finite value in the last step's logs, or when D(x) > 0.99 and D(G(z)) < 0.01 for
    the last `collapse_steps` steps in a row (0 = never)."""
    last = {key: history[key][-1] for key in history_log.STEP_KEYS}
    if not np.all(np.isfinite(list(last.values()))):
        raise Diverged(f"non-finite loss at {where}: d_loss={last['d_loss']}, g_loss={last['g_loss']}", run_dir)
    recent = list(zip(history["d_real"][-collapse_steps:], history["d_fake"][-collapse_steps:]))
    if collapse_steps and len(recent) == collapse_steps and all(r > 0.99 and f < 0.01 for r, f in recent):
        raise Diverged(f"discriminator collapse: D(x) > 0.99 and D(G(z)) < 0.01 for {collapse_steps} steps "
                       f"({where})", run_dir)


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can checkpoint first."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint ...",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ----- the epoch's side effects --------------------------------------------------------------------------

def memorisation_probe(config, images, count=MEMORISATION_PROBE):
    """(held-out reals, training reals): `count` of each, for D's accuracy on both after every epoch; None when
    the run has no held-out .npy of its image size."""
    path = config.get("holdout")
    if not path or not path.endswith(".npy"):
        return None
    holdout = data_io.load_npy_images(path, "held-out images", mmap=True)
    if holdout.shape[1:] != images.shape[1:]:
        return None
    count = min(count, len(holdout), len(images))
    return (np.asarray(holdout[:count]), np.asarray(images[:count])) if count else None


def measure_memorisation(discriminator, probe, batch_size):
    """(share of held-out reals, share of training reals) D calls real, D run as it trains on batches of the
    training batch size; (None, None) without a probe. A D that calls its training faces real but not unseen
    ones is memorising them (Karras et al. 2020)."""
    import models
    if probe is None:
        return None, None
    return tuple(round(float(np.mean(models.discriminator_logits(discriminator, reals, batch_size) > 0)), 4)
                 for reals in probe)


def sampler(nets):
    """The generator that samples: the EMA one when the recipe keeps one."""
    return nets["ema_generator"] or nets["generator"]


def save_grid(run_dir, config, epoch, nets, fixed_noise):
    """Every --sample-every epochs and at the last: the fixed-noise grid (returned, else None), from the sampling
    generator with its batch norm recalibrated."""
    import models
    models.recalibrate_batchnorm(sampler(nets), seed=epoch)
    if epoch % config["sample_every"] and epoch != config["epochs"]:
        return None
    grid = data_io.make_grid(data_io.generate_images(sampler(nets), fixed_noise))
    data_io.save_png(os.path.join(run_dir, "samples", f"epoch_{epoch:03d}.png"), grid, scale=2)
    return grid


def save_generators(run_dir, config, epoch, nets, history):
    """generator.keras after every epoch, snapshots/ every --snapshot-every epochs; with each snapshot and at the
    end, also the models only evaluate.py reads (save_evaluated_models)."""
    run_state.save_model(os.path.join(run_dir, "generator.keras"), sampler(nets), history)
    snapshot = config["snapshot_every"] and epoch % config["snapshot_every"] == 0
    if snapshot:
        os.makedirs(os.path.join(run_dir, "snapshots"), exist_ok=True)
        run_state.save_model(os.path.join(run_dir, "snapshots", f"generator_epoch_{epoch:03d}.keras"), sampler(nets),
                             history)
    if snapshot or epoch == config["epochs"]:
        save_evaluated_models(run_dir, nets, epoch, history)


def save_evaluated_models(run_dir, nets, seed, history):
    """discriminator.keras and, with EMA, the trained G as generator_raw.keras (its batch norm recalibrated)."""
    import models
    if nets["ema_generator"] is not None:
        models.recalibrate_batchnorm(nets["generator"], seed=seed)
        run_state.save_model(os.path.join(run_dir, "generator_raw.keras"), nets["generator"], history)
    run_state.save_model(os.path.join(run_dir, "discriminator.keras"), nets["discriminator"], history)


def log_epoch(writer, history, means, grid):
    """The epoch's line on the console and, with --tensorboard, its scalars, steps and grid."""
    epoch = history["epoch"]
    extra = f"ADA p {history['ada_p'][-1]:.3f}  " if history["ada_p"][-1] else ""
    if history["d_holdout_accuracy"][-1] is not None:
        extra += (f"D calls real: {history['d_holdout_accuracy'][-1]:.2f} held-out, "
                  f"{history['d_train_accuracy'][-1]:.2f} training  ")
    print(f"epoch {epoch}: d_loss {means[0]:.4f}  g_loss {means[1]:.4f}  D(x) {means[2]:.3f}  "
          f"D(G(z)) {means[3]:.3f}  {extra}{history['epoch_seconds'][-1]:.1f} s  "
          f"{history['images_per_second'][-1]:.0f} images/s")
    if writer is None:
        return
    import tensorflow as tf
    names = ("d_loss", "g_loss", "D(x)", "D(G(z))", "ADA p")
    with writer.as_default(step=epoch):
        for name, value in zip(names, means):
            tf.summary.scalar(f"epoch/{name}", value)
        tf.summary.scalar("epoch/images_per_second", history["images_per_second"][-1])
        if grid is not None:
            tf.summary.image("fixed_noise_samples", grid[None])
        first = len(history["d_loss"]) - history["epoch_steps"][-1]
        for name, key in zip(names, history_log.STEP_KEYS):
            for i, value in enumerate(history[key][first:], first + 1):
                tf.summary.scalar(f"step/{name}", value, step=i)
    writer.flush()
