"""Setting a run up before it trains: a new run's settings and folder, or a resumed run's saved settings checked
against the flags and its data against what it trained on; the Keras backend and the tf.distribute strategy.
Nothing here writes to the run directory."""
import os
import time

import numpy as np

from facegan import data_io
from facegan import run_lock
from facegan import run_state
from facegan import settings
from facegan import training_data


class NothingToDo(Exception):
    """--resume of a run that has already trained all its epochs."""



def prepare_run(args, new_run_check=True):
    """(run_dir, config, images) for a new run or a resumed one, every input checked; writes nothing."""
    from facegan import gan_step
    if args.resume:
        run_dir, config, images = resume_run(args)
    else:
        images, data_config = training_data.load_data(args)
        config = {**settings.settings(args, data_config["demo"]), **data_config}
        config["g_lr"], config["d_lr"] = config["g_lr"] or config["lr"], config["d_lr"] or config["lr"]
        if config["ada_target"] and not config["diffaug"]:
            raise data_io.DataError("--ada adapts how often the --diffaug ops are applied: give --diffaug OPS")
        if config["ada_ops"] and not config["ada_target"]:
            raise data_io.DataError("--ada-ops names the ops whose probability --ada adapts: give --ada TARGET")
        if config["ada_ops"] and set(config["ada_ops"].split(",")) - set(config["diffaug"].split(",")):
            raise data_io.DataError(f"--ada-ops {config['ada_ops']}: each op must also be in --diffaug "
                                    f"({config['diffaug'] or 'none given'})")
        config["precision"], config["precision_reason"] = (gan_step.auto_precision() if args.precision == "auto"
                                                           else (args.precision, "chosen with --precision"))
        dataset_name = "demo" if config["demo"] else os.path.basename(config["data"]).replace("_train.npy", "")
        default_name = f"{time.strftime('%Y%m%d-%H%M%S')}_{dataset_name}_{config['preset']}"
        run_dir = os.path.join(args.out, args.name or default_name)
        if new_run_check:
            check_new_run_dir(run_dir)
    if len(images) < config["batch_size"]:
        raise data_io.DataError(f"only {len(images)} training images in {config['data']}, fewer than one batch "
                                f"of {config['batch_size']}")
    return run_dir, config, images



def check_new_run_dir(run_dir):
    """Refuse to start a new run in a folder that holds a run, or anything else (a lock file left by a process
    that ended aside: it locks nothing)."""
    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise data_io.DataError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {run_lock.LOCK_NAME}:
        raise data_io.DataError(f"{run_dir} is not empty and holds no run; choose another --name")


def resume_run(args):
    """(run_dir, config, images) of --resume: the saved settings (keys an older run lacks filled with the
    paper's), checked against the flags given (KEPT_ON_RESUME must match, HONOURED_ON_RESUME are taken) and
    its data against the data it trained on. Raises NothingToDo for a run that has trained all its epochs."""
    run_dir, given = args.resume, settings.given_flags(args)
    # a run saved before a setting existed trained with it off, as in the paper's recipe
    config = run_state.load_config(run_dir, settings.paper_settings(), required=settings.RESUME_REQUIRED,
                                   checks=settings.config_checks())
    if {"out", "name"} & given:
        raise data_io.DataError(f"--out and --name name a new run; --resume continues {run_dir} in its own folder")
    run_state.check_resume_settings(config, {key: getattr(args, key) for key in settings.KEPT_ON_RESUME
                                             if key in given})
    checkpoint = run_state.load_latest_checkpoint(run_dir)
    epochs_done = checkpoint[1]["epoch"] if checkpoint else 0
    if "epochs" in given and args.epochs < epochs_done:
        raise data_io.DataError(f"{run_dir} has already trained {epochs_done} epochs; --epochs {args.epochs} "
                                "would undo them (give more epochs to train further)")
    config.update({key: getattr(args, key) for key in settings.HONOURED_ON_RESUME if key in given},
                  strategy=args.strategy, logical_cpus=args.logical_cpus)  # how this process runs
    check_backend(config, resume=True)
    if epochs_done >= config["epochs"]:
        raise NothingToDo(f"{run_dir} has already trained all its {epochs_done} epochs: nothing to do (pass "
                          f"--epochs N, N > {epochs_done}, to train further)")
    if checkpoint:
        check_fixed_noise(run_dir, config)
    data_path = args.data if "data" in given else config["data"]
    images, fingerprint = training_data.load_training_images(data_path)
    if images.shape[1] != config["image_size"]:
        raise data_io.DataError(f"{data_path} has {images.shape[1]} px images but the run was "
                                f"trained at {config['image_size']} px")
    data_changed = fingerprint != config.get("data_fingerprint")
    run_state.check_resume_data(run_dir, config, data_path, len(images), fingerprint, args.allow_data_change)
    if "holdout" in given or config.get("holdout") == config["data"] or (data_changed and config.get("holdout")):
        config["holdout"] = training_data.check_holdout(args.holdout or config["holdout"], data_path, images.shape, fingerprint,
                                          given="holdout" in given)
    return run_dir, config, images



def check_fixed_noise(run_dir, config):
    """A run with checkpoints continues its sample grids from fixed_noise.npy: it must be there, as made."""
    path = os.path.join(run_dir, "fixed_noise.npy")
    noise = data_io.load_npy(path, "noise of the run's sample grids (fixed_noise.npy)")
    if noise.shape != (config["n_samples"], config["latent_dim"]) or noise.dtype.kind != "f":
        raise data_io.DataError(f"{path} holds {noise.dtype} {noise.shape}, not the run's ({config['n_samples']}, "
                                f"{config['latent_dim']}) float noise vectors of its sample grids")
    if not np.isfinite(noise).all():
        raise data_io.DataError(f"{path} holds NaN or infinite values, not the noise of the run's sample grids")



def keras_backend():
    import keras
    return keras.backend.backend()



def check_backend(config, resume):
    """Record the Keras backend in the config; refuse a resume on another backend, and tf.distribute on JAX
    (both before any data is read)."""
    backend = keras_backend()
    if resume and config.get("backend", "tensorflow") != backend:
        raise data_io.DataError(f"the run was trained with KERAS_BACKEND={config.get('backend', 'tensorflow')}; "
                                f"resume it with that backend (this is {backend})")
    if backend != "tensorflow" and (config["strategy"] != "none" or config["logical_cpus"]):
        raise data_io.DataError(f"--strategy and --logical-cpus are TensorFlow's tf.distribute; with "
                                f"KERAS_BACKEND={backend} train on one device (--strategy none)")
    config["backend"] = backend



def make_strategy(name, logical_cpus=0):
    """The tf.distribute strategy for --strategy (None for "none"), after splitting the CPU if asked."""
    import tensorflow as tf
    if logical_cpus > 1 and tf.config.list_physical_devices("GPU"):
        raise data_io.DataError("--logical-cpus splits the CPU for machines without GPUs; --strategy mirrored "
                                "trains on this machine's GPUs instead: leave --logical-cpus out")
    if logical_cpus > 1:
        try:
            tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                       [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
        except RuntimeError as error:  # TensorFlow already running in this process
            raise data_io.DataError(f"--logical-cpus must be set before TensorFlow starts: {error}") from None
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None



def is_chief(strategy):
    """Whether this process writes the run's files: always, except on the non-chief workers of a
    multi-worker run (TF_CONFIG task 'chief', or 'worker' 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:  # no strategy, or a single machine
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief)
