"""Train the DCGAN (Radford, Metz & Chintala 2015) on 64x64 faces.

    python train.py                                   # CelebA if prepared (data/celeba64_train.npy), else a demo
    python train.py --epochs 10 --batch-size 128
    python train.py --preset best                     # the paper plus the changes that won the ablation
    python train.py --resume outputs/<run>            # continue a run where its last checkpoint left it
    python train.py --dry-run                         # a one-step run and its resume, to check a setup

What one step computes is in gan_step.py; checkpoints and the loss history in run_state.py. Everything a run
makes lands in outputs/<run>/ (see README.md). Ctrl-C or SIGTERM saves a checkpoint and exits; --resume
continues exactly where it stopped.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

from facegan import cli
from facegan import data_io
from facegan import presets
from facegan import run_state

DEFAULT_DATA = os.path.join("data", "celeba64_train.npy")
DEMO_SIZE = 8000
# The demo must show faces within minutes on a CPU: the same DCGAN at half width (4x fewer FLOPs) and
# batch 64 makes many more updates per minute than the paper's width 64 / batch 128; --preset best (the
# default there) keeps its faces sharp and varied at so few updates.
DEMO_DEFAULTS = {"epochs": 7, "batch_size": 64, "g_width": 32, "d_width": 32}
PAPER_DEFAULTS = {"epochs": 25, "batch_size": 128, "g_width": presets.PAPER["g_width"],
                  "d_width": presets.PAPER["d_width"]}
# What a resumed run keeps: its model, optimizer and recipe, its steps per epoch, its sample grid and its data
# source. Given with --resume, they must equal the run's.
KEPT_ON_RESUME = ("latent_dim", "g_width", "d_width", "batch_size", "lr", "beta1", "beta2", "seed", "precision",
                  "preset", *presets.RECIPE_KEYS, "max_steps", "n_samples", "demo")
# What a resumed run takes from its command line (and records): how long it trains, and how it checkpoints,
# watches, logs and spreads its work.
HONOURED_ON_RESUME = ("epochs", "checkpoint_every", "keep_checkpoints", "collapse_steps", "sample_every",
                      "tensorboard", "strategy", "logical_cpus")
# What config.json must hold to resume: what every run has recorded from the start (later keys have defaults).
RESUME_REQUIRED = ("data", "image_size", "epochs", "batch_size", "lr", "beta1", "beta2", "latent_dim", "g_width",
                   "d_width", "seed", "n_samples", "steps_per_epoch")
EXIT_INTERRUPTED, EXIT_DIVERGED = 130, 3
UNIT_INTERVAL = cli.float_in(0, 1, high_inclusive=False)  # [0, 1): Adam's betas, the EMA decay
NON_NEGATIVE = cli.float_in(0)


class NothingToDo(Exception):
    """--resume of a run that has already trained all its epochs."""


class Diverged(Exception):
    """Training produced NaN/inf losses or a collapsed discriminator."""

    def __init__(self, message, run_dir):
        super().__init__(message)
        self.run_dir = run_dir


# ----- the command line ----------------------------------------------------------------------------------

def add_data_flags(p):
    p.add_argument("--data", default=None,
                   help=f"training images, uint8 (N, S, S, 3) .npy from preprocess.py (default {DEFAULT_DATA}; "
                        "when it does not exist, the embedded demo faces are used)")
    p.add_argument("--holdout", default=None,
                   help="held-out images for evaluate.py (default: the _holdout.npy beside a --data that ends "
                        "in _train.npy; never the training data itself)")
    p.add_argument("--demo", action="store_true", help="train on the embedded procedurally drawn demo faces")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue even though the training data differs from what the run "
                        "trained on (another size or other images); its steps per epoch follow the new data")
    p.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="passes over the training set (default 25, where one more epoch on 50,000 faces gains "
                        "little: docs/training_length.md; 7 on the demo)")
    p.add_argument("--batch-size", type=cli.positive_int, default=None,
                   help="images per step (default 128, the paper; 64 on "
                                                               "the demo)")


def add_recipe_flags(p):
    p.add_argument("--lr", type=cli.positive_float, default=presets.PAPER["lr"],
                   help="Adam learning rate for both networks (the paper: 2e-4)")
    p.add_argument("--preset", default=None, choices=sorted(presets.PRESETS),
                   help=f"best (the default): the paper plus the changes that won the ablation and the long-run "
                        f"study of docs/ablation.md and docs/training_length.md "
                        f"({' '.join(presets.preset_flags('best'))}); "
                        "dcgan: the 2015 paper, unchanged. The flags below override the preset one by one")
    p.add_argument("--ema", type=UNIT_INTERVAL, default=None, metavar="DECAY",
                   help="keep an exponential moving average of G's weights with this decay (e.g. 0.999; 0 = off). "
                        "generator.keras and the grids then use the averaged G; the trained G is saved as "
                        "generator_raw.keras")
    p.add_argument("--diffaug", default=None, metavar="OPS",
                   help="DiffAugment (Zhao et al. 2020): comma-separated subset of color,translation,cutout,flip, "
                        "applied to real and fake images before D in both updates ('' = off)")
    p.add_argument("--loss", default=None, choices=("bce", "hinge"),
                   help="bce: the paper's cross-entropy with the non-saturating G loss; hinge: hinge loss "
                        "(Lim & Ye 2017; Miyato et al. 2018)")
    p.add_argument("--r1", type=NON_NEGATIVE, default=None, metavar="GAMMA",
                   help="R1 gradient penalty on reals, gamma/2 * E|grad D(x)|^2 (Mescheder et al. 2018; 0 = off)")
    p.add_argument("--r1-every", type=cli.positive_int, default=None, metavar="N",
                   help="lazy R1 (Karras et al. 2020): take the R1 penalty every N-th D update only, with gamma "
                        "times N (default 1: every update)")
    p.add_argument("--lecam", type=NON_NEGATIVE, default=None, metavar="LAMBDA",
                   help="LeCam regularisation of D (Tseng et al. 2021): LAMBDA * (E relu(D(x) - mean_fake)^2 + "
                        "E relu(mean_real - D(G(z)))^2), with running means of D's real and fake logits; keeps D "
                        "from over-separating a small training set (0 = off; e.g. 0.01: the penalty caps D's "
                        "real-fake logit gap, and a large LAMBDA such as 0.3 caps it so low that G never learns "
                        "faces, see docs/training_length.md)")
    p.add_argument("--bcr", type=NON_NEGATIVE, default=None, metavar="LAMBDA",
                   help="balanced consistency regularisation (Zhao et al. 2020): LAMBDA * E (D(x) - D(T(x)))^2 "
                        "for real and fake batches, T a random flip and translation; two extra D passes per "
                        "step (0 = off)")
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral normalisation of D's convolutions, with D's batch norm removed (Miyato et al. "
                        "2018)")
    p.add_argument("--minibatch-std", action=argparse.BooleanOptionalAction, default=None,
                   help="give D the batch's feature standard deviation as an extra feature map before its logit, "
                        "so that too-similar fakes are easy to tell apart (Karras et al. 2018)")
    p.add_argument("--minibatch-std-group", type=cli.non_negative_int, default=None, metavar="N",
                   help="--minibatch-std over groups of N images, each image getting its group's number (default "
                        "4, as in StyleGAN; 0 = one number for the whole batch)")
    p.add_argument("--label-smoothing", type=cli.float_in(0, 0.5, high_inclusive=False), default=None, metavar="EPS",
                   help="one-sided label smoothing: D's target for real images is 1 - EPS instead of 1, fakes "
                        "stay 0 (Salimans et al. 2016; 0 = off; bce loss only)")
    p.add_argument("--mode-seeking", type=NON_NEGATIVE, default=None, metavar="LAMBDA",
                   help="mode-seeking term in G's loss (Mao et al. 2019): LAMBDA / (|G(z1) - G(z2)| / |z1 - z2|) "
                        "over the batch's two halves, so that different noise must give different faces (0 = off)")
    p.add_argument("--ada", dest="ada_target", type=cli.float_in(0, 1, high_inclusive=False), default=None,
                   metavar="TARGET",
                   help="adaptive augmentation (ADA, Karras et al. 2020): apply each --diffaug op to each image "
                        "with a probability p that starts at 0 and is raised while D is too sure of the training "
                        "reals (E[sign D(x)] above TARGET, e.g. 0.6: D is memorising them) and lowered otherwise, "
                        "every 4 steps; p is shown in the progress bar and saved in steps.npz (0 = off: every op "
                        "on every image)")
    p.add_argument("--ada-kimg", type=cli.positive_int, default=None, metavar="K",
                   help="ADA's speed: p can move from 0 to 1 in K thousand real images (default 100)")
    p.add_argument("--ada-ops", default=None, metavar="OPS",
                   help="the --diffaug ops whose probability ADA adapts (comma-separated); the other --diffaug "
                        "ops apply to every image, e.g. --diffaug translation,color,cutout --ada-ops color,cutout "
                        "keeps translation always on ('' = default: all of them)")
    p.add_argument("--upsample", default=None, choices=("transposed", "resize"),
                   help="G's upsampling: transposed = the paper's k4 s2 transposed convolutions; resize = "
                        "nearest-neighbour resize + k3 convolution, against checkerboard artefacts (Odena et "
                        "al. 2016)")
    p.add_argument("--g-lr", type=cli.positive_float, default=None,
                   help="G learning rate (default --lr); TTUR sets G and D apart")
    p.add_argument("--d-lr", type=cli.positive_float, default=None, help="D learning rate (default --lr)")
    p.add_argument("--beta1", type=UNIT_INTERVAL, default=presets.PAPER["beta1"], help="Adam beta_1 (the paper: 0.5)")
    p.add_argument("--beta2", type=UNIT_INTERVAL, default=presets.PAPER["beta2"], help="Adam beta_2")
    p.add_argument("--latent-dim", type=cli.positive_int, default=presets.PAPER["latent_dim"],
                   help="size of the noise vector z ~ N(0, I)")
    p.add_argument("--g-width", type=cli.positive_int, default=None,
                   help="generator base channels, ngf (default 64, the "
                                                             "paper; 32 on the demo)")
    p.add_argument("--d-width", type=cli.positive_int, default=None,
                   help="discriminator base channels, ndf (default 64, the "
                                                             "paper; 32 on the demo)")


def add_run_flags(p):
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto (default): bf16 where the hardware computes in bf16 natively (x86 CPUs with "
                        "AVX512_BF16 or AMX_BF16, Arm CPUs with BF16, NVIDIA GPUs from Ampere on, TPUs), else "
                        "fp32; config.json records the choice and why. fp32: exactly the paper's arithmetic. "
                        "bf16 / fp16: mixed precision (fp16 with loss scaling, for older GPUs). The "
                        "discriminator's logit and the losses stay float32 in every mode")
    p.add_argument("--strategy", default="none", choices=("none", "mirrored", "multiworker"),
                   help="tf.distribute scale-out: mirrored = every local GPU (or the logical CPUs of "
                        "--logical-cpus); multiworker = several machines, each run with the same command and its "
                        "own TF_CONFIG (see README). The global --batch-size is split across replicas; batch norm "
                        "uses the global batch's statistics")
    p.add_argument("--logical-cpus", type=cli.non_negative_int, default=0, metavar="N",
                   help="split the CPU into N logical devices, to try --strategy mirrored without GPUs")
    p.add_argument("--seed", type=cli.seed, default=presets.PAPER["seed"],
                   help="seed for weights, noise and data order")
    p.add_argument("--sample-every", type=cli.positive_int, default=1,
                   help="save a fixed-noise sample grid every N epochs")
    p.add_argument("--n-samples", type=cli.positive_int, default=64, help="faces in each fixed-noise grid (8 per row)")
    p.add_argument("--snapshot-every", type=cli.non_negative_int, default=5, metavar="N",
                   help="keep the sampled generator of every Nth epoch as snapshots/generator_epoch_NNN.keras, "
                        "for evaluate.py --curve (quality against training length); 0 = never")
    p.add_argument("--out", default="outputs", help="folder that holds the run directories")
    p.add_argument("--name", default=None, help="run directory name (default: <time>_<dataset>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint with its saved settings "
                        "(--epochs may be raised; --checkpoint-every, --keep-checkpoints, --collapse-steps, "
                        "--sample-every, --tensorboard and --strategy may change)")
    p.add_argument("--checkpoint-every", type=cli.non_negative_int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps (0 = only at the end of each epoch)")
    p.add_argument("--keep-checkpoints", type=cli.positive_int, default=2, help="how many checkpoints to keep")
    p.add_argument("--collapse-steps", type=cli.non_negative_int, default=2000,
                   help="stop when D(x) > 0.99 and D(G(z)) < 0.01 for this many steps in a row (0 = never)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log losses, D outputs, images/s and the sample grid to RUN/tensorboard "
                        "(view with: tensorboard --logdir outputs)")
    p.add_argument("--max-steps", type=cli.non_negative_int, default=0,
                   help="stop each epoch after this many steps (0 = all)")
    p.add_argument("--dry-run", action="store_true",
                   help="a real run of one step per epoch in a temporary folder, stopped after epoch 1 and "
                        "resumed for epoch 2 (data, D and G steps, grid, checkpoint, resume), then report and "
                        "delete it")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p)
    add_recipe_flags(p)
    add_run_flags(p)
    return p


def parse_args(argv=None):
    """The flags, each number checked when parsed; args.given_flags names those given on the command line (a
    resumed run compares them with its own, defaults included)."""
    p = build_parser()
    args = p.parse_args(argv)
    unset = object()  # argparse fills in defaults only for what a namespace lacks
    seen = p.parse_args(argv, argparse.Namespace(**{key: unset for key in vars(args)}))
    args.given_flags = sorted(key for key, value in vars(seen).items() if value is not unset)
    check_args(p, args)
    return args


def given_flags(args):
    """The flags given on the command line (for args made without parse_args: those not at their default)."""
    if hasattr(args, "given_flags"):
        return set(args.given_flags)
    defaults = vars(parse_args([]))
    return {key for key, value in vars(args).items() if key in defaults and value != defaults[key]}


def check_args(p, args):
    """Exit with argparse's usage error for combinations no run can use (single values are checked by their
    types)."""
    if args.name is not None and (args.name in ("", ".", "..") or os.path.basename(args.name) != args.name
                                  or (os.altsep and os.altsep in args.name)):
        p.error(f"--name must be a folder name inside --out (no '/', not '.' or '..'), got {args.name!r}")
    for flag in ("data", "holdout", "resume", "out"):  # an empty path would silently mean "not given"
        if getattr(args, flag) == "":
            p.error(f"--{flag} must not be empty")
    if args.resume and args.dry_run:
        p.error("--dry-run starts its own run in a temporary folder; it cannot be combined with --resume")
    if args.allow_data_change and not args.resume:
        p.error("--allow-data-change applies to --resume only")
    if args.demo and (args.data or args.holdout):
        p.error("--demo trains on the embedded demo faces; it cannot be combined with --data or --holdout")
    if args.strategy == "multiworker":
        problem = tf_config_problem(os.environ.get("TF_CONFIG"))
        if problem:
            p.error(f"--strategy multiworker needs TF_CONFIG: a JSON object with the \"cluster\" of worker "
                    f"(and chief) addresses and this machine's \"task\" in it (see README); {problem}")
    if args.logical_cpus == 1 or (args.logical_cpus and args.strategy != "mirrored"):
        p.error("--logical-cpus N splits the CPU into N >= 2 devices for --strategy mirrored; "
                f"--logical-cpus {args.logical_cpus} with --strategy {args.strategy} would change nothing")
    if args.dry_run:
        ignored = [flag for flag in ("epochs", "max_steps", "n_samples", "name", "tensorboard")
                   if flag in getattr(args, "given_flags", ())]
        if ignored:
            p.error(f"--dry-run trains 2 epochs of one step in a temporary folder: --{ignored[0].replace('_', '-')} "
                    "would change nothing")
    for flag, text in (("--diffaug", args.diffaug), ("--ada-ops", args.ada_ops)):
        unknown = unknown_diffaug_ops(text) if text else None
        if unknown:
            p.error(f"{flag}: unknown {', '.join(sorted(unknown))}; choose from {','.join(presets.DIFFAUG_OPS)}")
    if args.label_smoothing and args.loss == "hinge":
        p.error("--label-smoothing applies to the bce loss only")
    if args.minibatch_std_group == 1:
        p.error("--minibatch-std-group must be 0 (whole batch) or >= 2")
    if args.ada_target and args.strategy != "none":
        p.error("--ada is single-device only (its probability is adjusted from one device's D outputs)")
    if args.spectral_norm and args.strategy != "none":
        p.error("--spectral-norm is single-device only (its power-iteration state is not synchronised across "
                "replicas)")
    if not args.resume:  # a resumed run keeps its recipe, whichever flags come with it
        if args.r1_every not in (None, 1) and recipe_option_off(args, "r1"):
            p.error(f"--r1-every {args.r1_every} spaces out the R1 penalty: it needs --r1 GAMMA > 0")
        if args.minibatch_std_group is not None and recipe_option_off(args, "minibatch_std"):
            p.error("--minibatch-std-group applies to --minibatch-std only")


def tf_config_problem(text):
    """What keeps TF_CONFIG from naming a cluster this machine is part of (None when it does): the cluster
    must list at least one worker or chief address, and the task must be one of them by type and index."""
    if not text:
        return "TF_CONFIG is not set"
    try:
        config = json.loads(text)
    except ValueError as error:
        return f"TF_CONFIG is not JSON ({error})"
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        return "TF_CONFIG needs a \"cluster\" object and a \"task\" object"
    for kind, addresses in cluster.items():
        if kind not in ("chief", "worker"):
            return f"the cluster's {kind!r} tasks are not for MultiWorkerMirroredStrategy (only chief and worker)"
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and ":" in a for a in addresses)):
            return f"the cluster's {kind!r} must be a list of host:port addresses, got {addresses!r}"
    if len(cluster.get("chief", [])) > 1:
        return "a cluster has at most one chief"
    if not cluster:
        return "the cluster lists no worker or chief: the run would train on this machine alone"
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        return f"the task's type {kind!r} is not in the cluster ({', '.join(sorted(cluster))})"
    if type(index) is not int or not 0 <= index < len(cluster[kind]):
        return f"the task's index {index!r} is not one of the cluster's {len(cluster[kind])} {kind} addresses"
    return None


def unknown_diffaug_ops(text):
    """The names in a --diffaug list that are not DiffAugment operations."""
    return set(text.split(",")) - set(presets.DIFFAUG_OPS)


def recipe_option_off(args, key):
    """Whether a recipe option (e.g. "r1") is off for this new run: not given, and off in every preset it can
    come from."""
    chosen = [args.preset] if args.preset else list(presets.PRESETS)
    return not getattr(args, key) and (getattr(args, key) is not None or not any(presets.PRESETS[p][key]
                                                                                for p in chosen))


# ----- data ----------------------------------------------------------------------------------------------

def load_data(args):
    """(train uint8 array, config updates). Falls back to the demo faces when no dataset is prepared."""
    use_demo = args.demo or (args.data is None and not os.path.exists(DEFAULT_DATA))
    if use_demo:
        data_path, holdout_path = draw_demo_faces()
    else:
        data_path = args.data or DEFAULT_DATA
        holdout_path = args.holdout or default_holdout(data_path)
    images, fingerprint = load_training_images(data_path)
    return images, {
        "data": os.path.abspath(data_path), "demo": use_demo,
        "holdout": check_holdout(holdout_path, data_path, images.shape, fingerprint, given=bool(args.holdout)),
        "train_count": int(len(images)), "data_fingerprint": fingerprint, "image_size": int(images.shape[1]),
    }


def default_holdout(data_path):
    """preprocess.py's PREFIX_holdout.npy beside PREFIX_train.npy; None for a file of any other name."""
    return data_path[:-len("_train.npy")] + "_holdout.npy" if data_path.endswith("_train.npy") else None


def check_holdout(path, data_path, data_shape, data_fingerprint, given):
    """The held-out set to record for evaluate.py (absolute path), or None with a note. Never the training
    data: not its file, nor any of its images (data_io.check_held_out, image by image), and at the training
    images' size. A --holdout (`given`) that is missing or is not held out is an error; a default one is
    dropped."""
    reason = None
    if path is None:
        reason = f"no _holdout.npy goes with {data_path} (not named PREFIX_train.npy)"
    elif not os.path.exists(path):
        if given:
            raise data_io.DataError(f"no held-out images at {path}")
        reason = f"{path} does not exist"
    else:
        try:
            holdout = data_io.load_image_array(path, data_shape[1], resize=False)
            data_io.check_held_out(holdout, path, data_shape[1], data_path, run="this run")
        except data_io.NotHeldOut as error:
            if given:
                raise data_io.NotHeldOut(f"--holdout {error}: evaluate.py would score the run against faces it "
                                         "trained on or resized ones; give held-out images, or none") from None
            reason = str(error)
    if reason:
        print(f"note: no held-out images recorded ({reason}); evaluate.py will need --real PATH")
        return None
    data_io.verify_dataset(path)
    return os.path.abspath(path)


def draw_demo_faces():
    """(train, holdout) paths of the procedurally drawn demo faces, drawn on first use."""
    from facegan import demo_faces
    data_path = os.path.join("data", "demo64_train.npy")
    holdout_path = os.path.join("data", "demo64_holdout.npy")
    if not (os.path.exists(data_path) and os.path.exists(holdout_path)):
        print(f"drawing {DEMO_SIZE:,} demo faces into {data_path} ...")
        data_io.save_npy(data_path, demo_faces.make_demo_faces(DEMO_SIZE, 64, seed=1))
        data_io.save_npy(holdout_path, demo_faces.make_demo_faces(1000, 64, seed=2))
    print("=" * 78)
    print("DEMO MODE: no CelebA prepared, training on procedurally drawn cartoon faces, with the DCGAN at")
    print("half width (32), batch 64 and --preset best so that faces appear within minutes on a CPU.")
    print("For real faces: python preprocess.py --source img_align_celeba.zip  (see README.md)")
    print("=" * 78)
    return data_path, holdout_path


def load_training_images(path):
    """(images, fingerprint) of a preprocess.py array, checked: uint8 (N, S, S, 3) with S in 32/64/128, and
    the array its JSON describes when it has one."""
    images = data_io.load_npy_images(path, "training data", hint="run preprocess.py first (or use --demo)")
    if images.shape[1] not in (32, 64, 128):
        raise data_io.DataError(f"{path} has {images.shape[1]} px images; 32, 64 or 128 are supported")
    record = data_io.verify_dataset(path)
    return images, record["fingerprint"] if record else data_io.array_fingerprint(images)


def epoch_order(count, batch_size, seed, epoch, steps, skip_steps=0):
    """The image indices of batches `skip_steps`..`steps` of one epoch, one row per batch, in an order fixed
    by (seed, epoch): a resumed run sees exactly the batches an uninterrupted one would. The last partial
    batch is dropped (one static shape)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[skip_steps * batch_size: steps * batch_size].reshape(-1, batch_size)


def make_dataset(images_tensor, batch_size, seed, epoch, steps, skip_steps=0):
    """TensorFlow: the uint8 batches of epoch_order as a tf.data pipeline."""
    import tensorflow as tf
    order = epoch_order(int(images_tensor.shape[0]), batch_size, seed, epoch, steps, skip_steps)
    return (tf.data.Dataset.from_tensor_slices(order)
            .map(lambda idx: tf.gather(images_tensor, idx))  # a small copy per batch: no parallelism needed
            .prefetch(2)
            .with_options(data_io.fixed_pipeline_options()))


# ----- the run's settings --------------------------------------------------------------------------------

def settings(args, demo):
    """The run's settings from the flags; those not given come from the preset and the paper (or the demo)."""
    config = {k: v for k, v in vars(args).items()
              if k not in ("resume", "data", "holdout", "dry_run", "given_flags", "allow_data_change")}
    config["preset"] = args.preset or "best"
    for key, value in {**(DEMO_DEFAULTS if demo else PAPER_DEFAULTS), **presets.PRESETS[config["preset"]]}.items():
        if config[key] is None:
            config[key] = value
    if config["loss"] == "hinge":
        config["label_smoothing"] = 0.0  # a bce-only option (a preset may bring it): record what runs
    return config


def prepare_run(args, new_run_check=True):
    """(run_dir, config, images) for a new run or a resumed one, every input checked; writes nothing."""
    from facegan import gan_step
    if args.resume:
        run_dir, config, images = resume_run(args)
    else:
        images, data_config = load_data(args)
        config = {**settings(args, data_config["demo"]), **data_config}
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
        run_dir = os.path.join(args.out, args.name or time.strftime("%Y%m%d-%H%M%S_") + dataset_name)
        if new_run_check and os.path.exists(os.path.join(run_dir, "config.json")):
            raise data_io.DataError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
        if new_run_check and os.path.isdir(run_dir) and os.listdir(run_dir):
            raise data_io.DataError(f"{run_dir} is not empty and holds no run; choose another --name")
    if len(images) < config["batch_size"]:
        raise data_io.DataError(f"only {len(images)} training images in {config['data']}, fewer than one batch "
                                f"of {config['batch_size']}")
    return run_dir, config, images


def resume_run(args):
    """(run_dir, config, images) of --resume: the saved settings (keys an older run lacks filled with the
    paper's), checked against the flags given (KEPT_ON_RESUME must match, HONOURED_ON_RESUME are taken) and
    its data against the data it trained on. Raises NothingToDo for a run that has trained all its epochs."""
    run_dir, given = args.resume, given_flags(args)
    # a run saved before a setting existed trained with it off, as in the paper's recipe
    paper = settings(parse_args(["--preset", "dcgan"]), demo=False)
    config = run_state.load_config(run_dir, paper, required=RESUME_REQUIRED, checks=saved_setting_checks())
    if {"out", "name"} & given:
        raise data_io.DataError(f"--out and --name name a new run; --resume continues {run_dir} in its own folder")
    run_state.check_resume_settings(config, {key: getattr(args, key) for key in KEPT_ON_RESUME if key in given})
    checkpoint = run_state.load_latest_checkpoint(run_dir)
    epochs_done = checkpoint[1]["epoch"] if checkpoint else 0
    if "epochs" in given and args.epochs < epochs_done:
        raise data_io.DataError(f"{run_dir} has already trained {epochs_done} epochs; --epochs {args.epochs} "
                                "would undo them (give more epochs to train further)")
    config.update({key: getattr(args, key) for key in HONOURED_ON_RESUME if key in given},
                  strategy=args.strategy, logical_cpus=args.logical_cpus)  # how this process runs
    check_backend(config, resume=True)
    if epochs_done >= config["epochs"]:
        raise NothingToDo(f"{run_dir} has already trained all its {epochs_done} epochs: nothing to do (pass "
                          f"--epochs N, N > {epochs_done}, to train further)")
    if checkpoint:
        check_fixed_noise(run_dir, config)
    data_path = args.data if "data" in given else config["data"]
    images, fingerprint = load_training_images(data_path)
    if images.shape[1] != config["image_size"]:
        raise data_io.DataError(f"{data_path} has {images.shape[1]} px images but the run was "
                                f"trained at {config['image_size']} px")
    run_state.check_resume_data(run_dir, config, data_path, len(images), fingerprint, args.allow_data_change)
    if "holdout" in given or config.get("holdout") == config["data"]:
        config["holdout"] = check_holdout(args.holdout or config["holdout"], data_path, images.shape, fingerprint,
                                          given="holdout" in given)
    return run_dir, config, images


def saved_setting_checks():
    """For run_state.load_config: what config.json may hold for each of train.py's flags, from the flag's
    own argparse type and choices (null only where the flag's default is null)."""
    defaults = settings(parse_args([]), demo=False)
    checks = {}
    for action in build_parser()._actions:
        key = action.dest
        if key not in defaults:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
            accepts, what = (lambda value: isinstance(value, bool)), "true or false"
        elif action.choices:
            accepts, what = (lambda value, choices=action.choices: value in choices), f"one of {action.choices}"
        elif action.type in (None, str):
            accepts, what = (lambda value: isinstance(value, str)), "a string"
        else:
            accepts = (lambda value, parse=action.type: _parses(parse, value))
            what = f"a valid --{key.replace('_', '-')}"
        if defaults[key] is None:
            accepts = (lambda value, accepts=accepts: value is None or accepts(value))
        checks[key] = (accepts, what)
    for key in ("diffaug", "ada_ops"):
        checks[key] = (lambda value: isinstance(value, str) and not (value and unknown_diffaug_ops(value)),
                       f"a comma-separated list of {', '.join(presets.DIFFAUG_OPS)}")
    return checks


def _parses(parse, value):
    """Whether a number saved in config.json is one its flag's cli type accepts (an integer for an integer
    flag)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (parse.__name__ == "integer"
                                                                         and not isinstance(value, int)):
        return False
    try:
        parse(repr(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def check_fixed_noise(run_dir, config):
    """A run with checkpoints continues its sample grids from fixed_noise.npy: it must be there, as made."""
    path = os.path.join(run_dir, "fixed_noise.npy")
    try:
        noise = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise data_io.DataError(f"cannot read {path}, the noise of the run's sample grids: "
                                f"{getattr(error, 'strerror', None) or error}") from None
    if noise.shape != (config["n_samples"], config["latent_dim"]) or noise.dtype.kind != "f":
        raise data_io.DataError(f"{path} holds {noise.dtype} {noise.shape}, not the run's ({config['n_samples']}, "
                                f"{config['latent_dim']}) float noise vectors of its sample grids")
    if not np.isfinite(noise).all():
        raise data_io.DataError(f"{path} holds NaN or infinite values, not the noise of the run's sample grids")


def make_step(nets, config, strategy, images):
    """(step, epoch_batches, sync) on the Keras backend: the compiled GAN step of gan_step.py; for (epoch,
    done), that epoch's batches after the first `done`; sync() writes the step's state into the Keras
    variables (before checkpoints and samples). TensorFlow: tf.data batches of uint8 images; JAX: the
    batches' index rows, the images held on the device and each batch gathered inside the step."""
    from facegan import gan_step
    batches = dict(batch_size=config["batch_size"], seed=config["seed"], steps=config["steps_per_epoch"])
    if keras_backend() == "jax":
        import jax
        step = gan_step.build_jax_train_step(nets, config, jax.device_put(images))
        return step, lambda epoch, done: epoch_order(len(images), epoch=epoch, skip_steps=done, **batches), step.sync
    import tensorflow as tf
    images_tensor = tf.constant(images)
    return (gan_step.build_train_step(nets, config, strategy),
            lambda epoch, done: make_dataset(images_tensor, epoch=epoch, skip_steps=done, **batches), lambda: None)


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


# ----- the loop ------------------------------------------------------------------------------------------

class _StopRequest:
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


def train(args):
    """Train per args (from parse_args), after checking every input and the output folder; a new run that
    fails before its first checkpoint leaves nothing behind. Returns (run_dir, exit code)."""
    check_backend({"strategy": args.strategy, "logical_cpus": args.logical_cpus}, resume=False)
    strategy = make_strategy(args.strategy, args.logical_cpus) if keras_backend() == "tensorflow" else None
    chief = is_chief(strategy)
    run_dir, config, images = prepare_run(args, new_run_check=chief)
    check_backend(config, resume=bool(args.resume))
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if config["batch_size"] % replicas:
        raise data_io.DataError(f"--batch-size {config['batch_size']} does not split evenly over {replicas} replicas")
    if not chief:
        return train_in(run_dir, config, images, strategy, chief, args)
    new_folders = [] if args.resume else missing_folders(run_dir)
    cli.check_output_folder(run_dir)
    try:
        return train_in(run_dir, config, images, strategy, chief, args)
    except BaseException:
        if new_folders and not run_state.checkpoint_names(run_dir):  # a new run with nothing to resume
            shutil.rmtree(run_dir, ignore_errors=True)
            for folder in new_folders[1:]:  # the --out folders this run made, when empty
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        raise


def missing_folders(path):
    """path and its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(path) and os.path.dirname(os.path.abspath(path)) != os.path.abspath(path):
        missing.append(path)
        path = os.path.dirname(os.path.abspath(path))
    return missing


def train_in(run_dir, config, images, strategy, chief, args):
    """train() once the run and its output folder are checked. Returns (run_dir, exit code)."""
    from facegan import gan_step
    replicas = strategy.num_replicas_in_sync if strategy else 1
    # Every worker of a multi-worker run reads the run directory (a shared folder, for --resume); only the
    # chief writes to it, the others write to a scratch folder.
    out_dir = run_dir if chief else tempfile.mkdtemp(prefix="facegan-worker-")
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    with strategy.scope() if strategy else contextlib.nullcontext():
        nets = gan_step.build_models(config, distributed=replicas > 1)
    variables = run_state.state_variables(nets)
    steps_per_epoch = min(len(images) // config["batch_size"], config["max_steps"] or len(images))
    history, fixed_noise = start_or_resume(run_dir, out_dir, config, variables, resume=bool(args.resume))
    config.update(steps_per_epoch=steps_per_epoch, replicas=replicas, **versions())
    data_io.save_json(os.path.join(out_dir, "config.json"), config)
    train_step, epoch_batches, sync = make_step(nets, config, strategy, images)
    probe = memorisation_probe(config, images)
    writer = None
    if config["tensorboard"]:
        import tensorflow as tf
        writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    print(f"run directory: {run_dir}\ntraining on {len(images):,} images of {config['image_size']}px "
          f"({config['backend']} on {config['devices'][-1]}, {config['precision']}), batch {config['batch_size']}, "
          f"{steps_per_epoch} "
          f"steps/epoch, epochs {history['epoch'] + 1}..{config['epochs']}")
    with _StopRequest() as stop:
        for epoch in range(history["epoch"] + 1, config["epochs"] + 1):
            done = run_state.steps_into_epoch(history)  # steps of this epoch already done
            start = time.perf_counter()

            def save_checkpoint():
                sync()
                run_state.save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
            if not run_epoch(train_step, epoch_batches(epoch, done), epoch, done, config, history, stop, run_dir,
                             save_checkpoint):
                save_evaluated_models(out_dir, nets, epoch)  # D as checkpointed, for evaluate.py
                return run_dir, EXIT_INTERRUPTED
            means = run_state.record_epoch(history, epoch, run_state.steps_into_epoch(history) - done,
                                           config["batch_size"], time.perf_counter() - start)
            sync()
            record_memorisation(history, nets["discriminator"], probe, config["batch_size"])
            run_state.save_history(out_dir, history)
            grid = save_epoch_outputs(out_dir, config, epoch, nets, fixed_noise)
            log_epoch(writer, history, means, grid)
            run_state.save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"done: {run_dir} (generator.keras, samples/, d_losses.npy, g_losses.npy)")
    return run_dir, 0


def versions():
    """Where and with what the run trains, for config.json."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        return {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "keras": keras.__version__}
    import tensorflow as tf
    devices = [d.name for d in tf.config.list_logical_devices()]
    return {"devices": devices, "tensorflow": tf.__version__, "keras": keras.__version__}


def start_or_resume(run_dir, out_dir, config, variables, resume):
    """(history, fixed noise of the sample grids): from the newest checkpoint when resuming, else fresh."""
    checkpoint = run_state.load_latest_checkpoint(run_dir, variables) if resume else None
    if checkpoint:
        path, history = checkpoint
        run_state.fill_legacy_history(history, config["steps_per_epoch"])  # the steps per epoch it ran with
        print(f"resuming {run_dir} from {os.path.basename(path)} (epoch {history['epoch']} done, "
              f"{run_state.steps_into_epoch(history)} steps into the next)")
        return history, np.load(os.path.join(run_dir, "fixed_noise.npy"))
    if resume:
        print(f"{run_dir} has no checkpoint yet: starting it from epoch 1")
    fixed_noise = np.random.default_rng(config["seed"] + 1).standard_normal(
        (config["n_samples"], config["latent_dim"])).astype(np.float32)
    data_io.save_npy(os.path.join(out_dir, "fixed_noise.npy"), fixed_noise)
    return run_state.new_history(), fixed_noise


def memorisation_probe(config, images, count=512):
    """(held-out reals, training reals): `count` of each, for D's accuracy on both after every epoch; None when
    the run has no held-out .npy of its image size."""
    path = config.get("holdout")
    if not path or not path.endswith(".npy"):
        return None
    holdout = data_io.load_npy_images(path, "held-out images", mmap=True)
    if holdout.shape[1:] != images.shape[1:]:
        return None
    count = min(count, len(holdout), len(images))
    return np.asarray(holdout[:count]), np.asarray(images[:count])


def record_memorisation(history, discriminator, probe, batch_size):
    """D's accuracy on held-out and on training reals (the share it calls real, D run as it trains on batches of
    the training batch size) in the history: a D that calls its training faces real but not unseen ones is
    memorising them (Karras et al. 2020)."""
    import models
    accuracies = [None, None]
    if probe is not None:
        for i, reals in enumerate(probe):
            logits = models.discriminator_logits(discriminator, reals, batch_size)
            accuracies[i] = round(float(np.mean(logits > 0)), 4)
    history["d_holdout_accuracy"].append(accuracies[0])
    history["d_train_accuracy"].append(accuracies[1])


def run_epoch(train_step, dataset, epoch, done, config, history, stop, run_dir, save_checkpoint):
    """Train on the epoch's batches after the `done` first. Returns False when stopped by a signal (after a
    checkpoint); raises Diverged on a non-finite loss or a collapsed discriminator."""
    from tqdm import tqdm
    steps, start = config["steps_per_epoch"], time.perf_counter()
    bar = tqdm(dataset, total=steps, initial=done, desc=f"epoch {epoch}/{config['epochs']}", unit="step",
               dynamic_ncols=True, mininterval=1.0)
    for step, real in enumerate(bar, done + 1):
        values = [float(v) for v in train_step(real)]
        for key, value in zip(run_state.STEP_KEYS, values):
            history[key].append(value)
        check_health(values, history, config["collapse_steps"], f"epoch {epoch} step {step}", run_dir)
        if step % 5 == 0 or step == steps:
            ada = {"p": f"{values[4]:.3f}"} if config["ada_target"] else {}
            bar.set_postfix(d_loss=f"{values[0]:.3f}", g_loss=f"{values[1]:.3f}", D_x=f"{values[2]:.2f}",
                            D_Gz=f"{values[3]:.2f}", **ada, refresh=False,
                            img_s=f"{(step - done) * config['batch_size'] / (time.perf_counter() - start):.0f}")
        every = config["checkpoint_every"]
        if stop.signal is not None or (every and len(history["d_loss"]) % every == 0):
            save_checkpoint()
        if stop.signal is not None:
            bar.close()
            print(f"stopped at epoch {epoch} step {step}; checkpoint saved. Resume with:\n"
                  f"  python train.py --resume {run_dir}")
            return False
    bar.close()
    return True


def check_health(values, history, collapse_steps, where, run_dir):
    """Raise Diverged on a non-finite loss, or when D(x) > 0.99 and D(G(z)) < 0.01 for the last
    `collapse_steps` steps in a row (0 = never)."""
    if not np.all(np.isfinite(values)):
        raise Diverged(f"non-finite loss at {where}: d_loss={values[0]}, g_loss={values[1]}", run_dir)
    recent = list(zip(history["d_real"][-collapse_steps:], history["d_fake"][-collapse_steps:]))
    if collapse_steps and len(recent) == collapse_steps and all(r > 0.99 and f < 0.01 for r, f in recent):
        raise Diverged(f"discriminator collapse: D(x) > 0.99 and D(G(z)) < 0.01 for {collapse_steps} steps "
                       f"({where})", run_dir)


def save_epoch_outputs(run_dir, config, epoch, nets, fixed_noise):
    """The sampled generator and, every --sample-every epochs, the fixed-noise grid (returned, else None). With
    EMA the averaged G is the one sampled and saved as generator.keras. The models only evaluate.py reads (the
    trained G, generator_raw.keras, and D) are saved with each snapshot and at the end."""
    import models
    sampler = nets["ema_generator"] or nets["generator"]
    models.recalibrate_batchnorm(sampler, seed=epoch)
    grid = None
    if epoch % config["sample_every"] == 0 or epoch == config["epochs"]:
        grid = data_io.make_grid(data_io.to_uint8(sampler(fixed_noise, training=False)))
        data_io.save_png(os.path.join(run_dir, "samples", f"epoch_{epoch:03d}.png"), grid, scale=2)
    run_state.save_model(os.path.join(run_dir, "generator.keras"), sampler)
    snapshot = config["snapshot_every"] and epoch % config["snapshot_every"] == 0
    if snapshot:
        os.makedirs(os.path.join(run_dir, "snapshots"), exist_ok=True)
        run_state.save_model(os.path.join(run_dir, "snapshots", f"generator_epoch_{epoch:03d}.keras"), sampler)
    if snapshot or epoch == config["epochs"]:
        save_evaluated_models(run_dir, nets, epoch)
    return grid


def save_evaluated_models(run_dir, nets, seed):
    """discriminator.keras and, with EMA, the trained G as generator_raw.keras (its batch norm recalibrated)."""
    import models
    if nets["ema_generator"] is not None:
        models.recalibrate_batchnorm(nets["generator"], seed=seed)
        run_state.save_model(os.path.join(run_dir, "generator_raw.keras"), nets["generator"])
    run_state.save_model(os.path.join(run_dir, "discriminator.keras"), nets["discriminator"])


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
        for name, key in zip(names, run_state.STEP_KEYS):
            for i, value in enumerate(history[key][first:], first + 1):
                tf.summary.scalar(f"step/{name}", value, step=i)
    writer.flush()


def dry_run(args):
    """A real run of one step per epoch in a temporary folder, stopped after epoch 1 and resumed for
    epoch 2: data, both updates, grids, checkpoint and resume. Returns an exit code."""
    start = time.time()
    folder = tempfile.mkdtemp(prefix="facegan-dry-run-")
    try:
        first = argparse.Namespace(**{**vars(args), "out": folder, "name": "dry-run", "max_steps": 1, "epochs": 1,
                                      "n_samples": 16, "dry_run": False, "tensorboard": False})
        run, code = train(first)
        if code == 0:
            _, code = train(parse_args(["--resume", run, "--epochs", "2"]))
        if code != 0:
            return code
        if len(np.load(os.path.join(run, "d_losses.npy"))) != 2 or not run_state.latest_checkpoint(run):
            print("train.py: error: dry run: the resumed run did not continue to epoch 2", file=sys.stderr)
            return 1
        print(f"dry run OK in {time.time() - start:.0f} s: data, D step, G step, sample grid, checkpoint and "
              "resume all work")
        return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dry_run:
            return dry_run(args)
        _, code = train(args)
        return code
    except NothingToDo as message:
        print(message)
        return 0
    except Diverged as error:
        print(f"train.py: training diverged: {error}; {checkpoint_state(error.run_dir)}. Start again with another "
              "--seed or a lower --lr.", file=sys.stderr)
        return EXIT_DIVERGED


def checkpoint_state(run_dir):
    """What a stopped run left to resume from, as said on disk."""
    if not os.path.isdir(run_dir):
        return "no checkpoint was saved, and the new run's folder was removed"
    newest = run_state.latest_checkpoint(run_dir)
    if newest is None:
        return f"no checkpoint was saved in {run_dir}"
    return (f"its newest checkpoint, {newest}, is from before the divergence (resuming from it would repeat the "
            "same steps)")


if __name__ == "__main__":
    sys.exit(main())
