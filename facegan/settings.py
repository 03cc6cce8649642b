"""train.py's settings as one table: each setting's flag, default, accepted values, what --resume does with it,
and its one-line help. The command line, config.json's checks and resume's comparison all derive from it.

A row: (key, default, kind, on_resume, help). kind: ("int", low, high), ("float", low, high, low_inclusive,
high_inclusive), ("choice", options), ("flag",) (store_true), ("switch",) (--x / --no-x), ("str",),
("ops",) (a comma-separated list of DiffAugment ops). on_resume: "kept" (a resumed run keeps its own; given, it
must match), "honoured" (taken from the command line and recorded), "new" (a new run's only: ignored on
resume), "input" (where the run's inputs are: not a setting of the run itself).
A default of None is filled in from the preset (presets.PRESETS) or from the paper / demo defaults below.
"""
import argparse
import json
import os

from facegan import cli
from facegan import presets

DEFAULT_DATA = os.path.join("data", "celeba64_train.npy")
# The demo must show faces within minutes on a CPU: the same DCGAN at half width (4x fewer FLOPs) and
# batch 64 makes many more updates per minute than the paper's width 64 / batch 128.
DEMO_DEFAULTS = {"epochs": 7, "batch_size": 64, "g_width": 32, "d_width": 32}
PAPER_DEFAULTS = {"epochs": 25, "g_width": presets.PAPER["g_width"], "d_width": presets.PAPER["d_width"]}

_UNIT = ("float", 0, 1, True, False)  # [0, 1): Adam's betas, the EMA decay
_NON_NEGATIVE = ("float", 0, None, True, True)
_POSITIVE = ("float", 0, None, False, True)
_POSITIVE_INT, _NON_NEGATIVE_INT = ("int", 1, None), ("int", 0, None)

SETTINGS = (
    # data
    ("data", None, ("str",), "input", f"training images, uint8 .npy (default {DEFAULT_DATA}, else the demo "
                                      "faces)"),
    ("holdout", None, ("str",), "input", "held-out images for evaluate.py (default: the _holdout.npy beside "
                                         "--data)"),
    ("demo", False, ("flag",), "kept", "train on the embedded procedurally drawn demo faces"),
    ("allow_data_change", False, ("flag",), "input", "with --resume: continue on other training data"),
    ("epochs", None, _POSITIVE_INT, "honoured", "passes over the training set (default 25; 7 on the demo)"),
    ("batch_size", None, _POSITIVE_INT, "kept", "images per step (default: best 32, dcgan 128; 64 on the demo)"),
    # the recipe
    ("lr", presets.PAPER["lr"], _POSITIVE, "kept", "Adam learning rate of both networks (default 2e-4)"),
    ("preset", None, ("choice", tuple(sorted(presets.PRESETS))), "kept",
     "best (default): the paper plus the study's winners; dcgan: the 2015 paper"),
    ("ema", None, _UNIT, "kept", "decay of an EMA of G's weights, sampled and saved (0 = off)"),
    ("diffaug", None, ("ops",), "kept", f"DiffAugment ops, comma-separated: {','.join(presets.DIFFAUG_OPS)}"),
    ("loss", None, ("choice", ("bce", "hinge", "lsgan", "rpgan")), "kept",
     "bce (the paper), hinge, lsgan (least squares) or rpgan (relativistic pairing)"),
    ("r1", None, _NON_NEGATIVE, "kept", "R1 penalty gamma on reals (0 = off)"),
    ("r2", None, _NON_NEGATIVE, "kept", "R2 penalty gamma on fakes (0 = off)"),
    ("r1_every", None, _POSITIVE_INT, "kept", "lazy R1/R2: every N-th D update, gamma times N (default 1)"),
    ("lecam", None, _NON_NEGATIVE, "kept", "LeCam regularisation of D, lambda (0 = off)"),
    ("bcr", None, _NON_NEGATIVE, "kept", "balanced consistency regularisation of D, lambda (0 = off)"),
    ("spectral_norm", None, ("switch",), "kept", "spectral norm on D's convolutions, without D's batch norm"),
    ("minibatch_std", None, ("switch",), "kept", "minibatch standard deviation feature map in D"),
    ("minibatch_std_group", None, _NON_NEGATIVE_INT, "kept", "--minibatch-std group size (default 4; 0 = batch)"),
    ("label_smoothing", None, ("float", 0, 0.5, True, False), "kept", "one-sided: D's real target 1 - EPS (bce)"),
    ("mode_seeking", None, _NON_NEGATIVE, "kept", "mode-seeking term in G's loss, lambda (0 = off)"),
    ("ada_target", None, ("float", 0, 1, True, False), "kept", "ADA: adapt --diffaug's probability to this "
                                                               "E[sign D(x)] (0 = off)"),
    ("ada_kimg", None, _POSITIVE_INT, "kept", "ADA: thousands of reals for p to go 0 -> 1 (default 100)"),
    ("ada_ops", None, ("ops",), "kept", "ADA: the --diffaug ops it adapts (default all)"),
    ("upsample", None, ("choice", ("transposed", "resize")), "kept", "G's upsampling: transposed (the paper) or "
                                                                     "resize + conv"),
    ("g_norm", None, ("choice", ("batch", "selfmod")), "kept", "G's normalisation: batch (the paper) or selfmod "
                                                               "(batch norm modulated by z)"),
    ("arch", None, ("choice", ("dcgan", "resnet")), "kept", "dcgan (the paper) or resnet: residual G and D "
                                                             "without batch norm"),
    ("g_lr", None, _POSITIVE, "kept", "G's learning rate (default --lr)"),
    ("d_lr", None, _POSITIVE, "kept", "D's learning rate (default --lr)"),
    ("beta1", presets.PAPER["beta1"], _UNIT, "kept", "Adam beta_1 (default 0.5)"),
    ("beta2", None, _UNIT, "kept", "Adam beta_2 (default 0.999)"),
    ("latent_dim", presets.PAPER["latent_dim"], _POSITIVE_INT, "kept", "size of z ~ N(0, I) (default 100)"),
    ("g_width", None, _POSITIVE_INT, "kept", "G's base channels (default 64; 32 on the demo)"),
    ("d_width", None, _POSITIVE_INT, "kept", "D's base channels (default 64; 32 on the demo)"),
    # how the run runs
    ("precision", "auto", ("choice", ("auto", "fp32", "bf16", "fp16")), "kept",
     "auto (default: bf16 where the hardware has it natively), fp32, bf16, fp16"),
    ("strategy", "none", ("choice", ("none", "mirrored", "multiworker")), "honoured",
     "tf.distribute: mirrored (local GPUs) or multiworker (TF_CONFIG)"),
    ("logical_cpus", 0, _NON_NEGATIVE_INT, "honoured", "split the CPU into N devices for --strategy mirrored"),
    ("seed", presets.PAPER["seed"], ("int", 0, 2**32 - 1), "kept", "seed of weights, noise and data order "
                                                                   "(default 0)"),
    ("sample_every", 1, _POSITIVE_INT, "honoured", "a fixed-noise grid every N epochs (default 1)"),
    ("n_samples", 64, ("int", 1, 1024), "kept", "faces in each fixed-noise grid, 8 per row (default 64)"),
    ("snapshot_every", 5, _NON_NEGATIVE_INT, "new", "keep G every N epochs in snapshots/ (default 5; 0 = never)"),
    ("out", "outputs", ("str",), "new", "folder of the run directories (default outputs)"),
    ("name", None, ("str",), "new", "run directory name (default <time>_<dataset>_<preset>)"),
    ("resume", None, ("str",), "input", "continue the run in RUN_DIR from its last checkpoint"),
    ("checkpoint_every", 0, _NON_NEGATIVE_INT, "honoured", "also checkpoint every N steps (default 0: per epoch)"),
    ("keep_checkpoints", 2, _POSITIVE_INT, "honoured", "checkpoints kept (default 2)"),
    ("collapse_steps", 2000, _NON_NEGATIVE_INT, "honoured", "stop after N steps of D(x) > 0.99, D(G(z)) < 0.01 "
                                                            "(default 2000; 0 = never)"),
    ("tensorboard", False, ("flag",), "honoured", "also log to RUN/tensorboard"),
    ("max_steps", 0, _NON_NEGATIVE_INT, "kept", "at most N steps per epoch (default 0: all)"),
    ("dry_run", False, ("flag",), "input", "a one-step run and its resume in a temporary folder, then report"),
)
FLAGS = {"ada_target": "--ada"}  # keys whose flag is not --key-with-dashes
METAVARS = {"data": "NPY", "holdout": "NPY", "resume": "RUN_DIR", "out": "DIR", "diffaug": "OPS", "ada_ops": "OPS",
            "ema": "DECAY", "r1": "GAMMA", "r2": "GAMMA", "lecam": "LAMBDA", "bcr": "LAMBDA", "mode_seeking": "LAMBDA",
            "label_smoothing": "EPS", "ada_target": "TARGET", "ada_kimg": "K"}

KEY_ROWS = {row[0]: row for row in SETTINGS}
KEPT_ON_RESUME = tuple(key for key, *_, on_resume, _ in SETTINGS if on_resume == "kept")
HONOURED_ON_RESUME = tuple(key for key, *_, on_resume, _ in SETTINGS if on_resume == "honoured")
NOT_RECORDED = tuple(key for key, *_, on_resume, _ in SETTINGS if on_resume == "input")
# What config.json must hold to resume: what every run has recorded from the start (later keys have defaults).
RESUME_REQUIRED = ("data", "image_size", "epochs", "batch_size", "lr", "beta1", "beta2", "latent_dim", "g_width",
                   "d_width", "seed", "n_samples", "steps_per_epoch")


def flag(key):
    return FLAGS.get(key, "--" + key.replace("_", "-"))


# ----- the command line ----------------------------------------------------------------------------------

def argparse_type(kind):
    """The argparse type that parses a value of `kind` from text (None for flags and plain strings)."""
    if kind[0] == "int":
        return cli.int_in(kind[1], kind[2])
    if kind[0] == "float":
        return cli.float_in(*kind[1:])
    return None


def build_parser(description):
    """train.py's parser: one flag per row of SETTINGS, one line of help each; the epilog spells out
    --preset best as the flags it sets."""
    epilog = f"--preset best sets:\n  {' '.join(presets.preset_flags('best'))}"
    parser = argparse.ArgumentParser(
        usage="python train.py [options]", description=description, epilog=epilog,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=116))
    for key, default, kind, _, help_text in SETTINGS:
        options = {"dest": key, "default": default, "help": help_text}
        if kind[0] == "flag":
            options["action"] = "store_true"
        elif kind[0] == "switch":
            options["action"] = argparse.BooleanOptionalAction
        elif kind[0] == "choice":
            options["choices"] = kind[1]
        else:
            options["type"] = argparse_type(kind)
            options["metavar"] = METAVARS.get(key, "N" if kind[0] == "int" else "X")
        parser.add_argument(flag(key), **options)
    return parser


def parse_args(argv=None, description=None):
    """The flags, each value checked when parsed and their combinations after; args.given_flags names those
    given on the command line (a resumed run compares them with its own, defaults included)."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    unset = object()  # argparse fills in defaults only for what a namespace lacks
    seen = parser.parse_args(argv, argparse.Namespace(**{key: unset for key in vars(args)}))
    args.given_flags = sorted(key for key, value in vars(seen).items() if value is not unset)
    problem = combination_problem(args)
    if problem:
        parser.error(problem)
    return args


def defaults():
    """Every flag at its default, as parse_args([]) gives them (without the parse)."""
    return argparse.Namespace(**{key: default for key, default, *_ in SETTINGS}, given_flags=[])


def given_flags(args):
    """The flags given on the command line (for args made without parse_args: those not at their default)."""
    if hasattr(args, "given_flags"):
        return set(args.given_flags)
    return {key for key, default, *_ in SETTINGS if getattr(args, key, default) != default}


def combination_problem(args):
    """What makes a combination of flags unusable for any run (single values are checked by their types), or
    None."""
    if args.name is not None and (args.name in ("", ".", "..") or os.path.basename(args.name) != args.name
                                  or (os.altsep and os.altsep in args.name)):
        return f"--name must be a folder name inside --out (no '/', not '.' or '..'), got {args.name!r}"
    for key in ("data", "holdout", "resume", "out"):  # an empty path would silently mean "not given"
        if getattr(args, key) == "":
            return f"--{key} must not be empty"
    if args.resume and args.dry_run:
        return "--dry-run starts its own run in a temporary folder; it cannot be combined with --resume"
    if args.allow_data_change and not args.resume:
        return "--allow-data-change applies to --resume only"
    if args.demo and (args.data or args.holdout):
        return "--demo trains on the embedded demo faces; it cannot be combined with --data or --holdout"
    if args.strategy == "multiworker":
        problem = tf_config_problem(os.environ.get("TF_CONFIG"))
        if problem:
            return (f"--strategy multiworker needs TF_CONFIG: a JSON object with the \"cluster\" of worker (and "
                    f"chief) addresses and this machine's \"task\" in it (see docs/running.md); {problem}")
    if args.logical_cpus == 1 or (args.logical_cpus and args.strategy != "mirrored"):
        return ("--logical-cpus N splits the CPU into N >= 2 devices for --strategy mirrored; "
                f"--logical-cpus {args.logical_cpus} with --strategy {args.strategy} would change nothing")
    if args.dry_run:
        ignored = [key for key in ("epochs", "max_steps", "n_samples", "name", "tensorboard")
                   if key in getattr(args, "given_flags", ())]
        if ignored:
            return f"--dry-run trains 2 epochs of one step in a temporary folder: {flag(ignored[0])} would change nothing"
    for key in ("diffaug", "ada_ops"):
        unknown = unknown_diffaug_ops(getattr(args, key)) if getattr(args, key) else None
        if unknown:
            return f"{flag(key)}: unknown {', '.join(sorted(unknown))}; choose from {','.join(presets.DIFFAUG_OPS)}"
    if args.label_smoothing and args.loss not in (None, "bce"):
        return "--label-smoothing applies to the bce loss only"
    if args.arch == "resnet" and (args.spectral_norm or args.g_norm == "selfmod"):
        return ("--arch resnet has no batch norm to modulate or replace: --spectral-norm and --g-norm selfmod "
                "apply to dcgan")
    if args.minibatch_std_group == 1:
        return "--minibatch-std-group must be 0 (whole batch) or >= 2"
    if args.ada_target and args.strategy != "none":
        return "--ada is single-device only (its probability is adjusted from one device's D outputs)"
    if args.spectral_norm and args.strategy != "none":
        return ("--spectral-norm is single-device only (its power-iteration state is not synchronised across "
                "replicas)")
    if not args.resume:  # a resumed run keeps its recipe, whichever flags come with it
        if args.r1_every not in (None, 1) and recipe_option_off(args, "r1") and recipe_option_off(args, "r2"):
            return f"--r1-every {args.r1_every} spaces out the R1/R2 penalties: it needs --r1 or --r2 GAMMA > 0"
        if args.minibatch_std_group is not None and recipe_option_off(args, "minibatch_std"):
            return "--minibatch-std-group applies to --minibatch-std only"
    return None


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


# ----- a run's settings ----------------------------------------------------------------------------------

def settings(args, demo):
    """The run's settings from the flags; those not given come from the preset and the paper (or the demo)."""
    config = {key: getattr(args, key) for key, *_ in SETTINGS if key not in NOT_RECORDED}
    config["preset"] = args.preset or "best"
    # the demo's size and batch over the preset's: a demo must show faces within minutes
    defaults = {**PAPER_DEFAULTS, **presets.PRESETS[config["preset"]], **(DEMO_DEFAULTS if demo else {})}
    for key, value in defaults.items():
        if config[key] is None:
            config[key] = value
    if config["loss"] != "bce":
        config["label_smoothing"] = 0.0  # a bce-only option (a preset may bring it): record what runs
    return config


def paper_settings():
    """The settings of a run of the 2015 paper's recipe with every other flag at its default: what a run saved
    before a setting existed trained with."""
    return settings(argparse.Namespace(**{**vars(defaults()), "preset": "dcgan"}), demo=False)


def accepts(kind, value):
    """Whether a value saved in config.json is one a flag of `kind` accepts."""
    if kind[0] in ("flag", "switch"):
        return isinstance(value, bool)
    if kind[0] == "choice":
        return value in kind[1]
    if kind[0] == "str":
        return isinstance(value, str)
    if kind[0] == "ops":
        return isinstance(value, str) and not (value and unknown_diffaug_ops(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind[0] == "int" and type(value) is not int):
        return False
    try:
        argparse_type(kind)(repr(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def config_checks():
    """For run_state.load_config: what config.json may hold for each recorded setting (null only where the
    setting's default is null)."""
    filled = settings(defaults(), demo=False)
    checks = {}
    for key, _, kind, on_resume, _ in SETTINGS:
        if on_resume == "input":
            continue
        what = ("true or false" if kind[0] in ("flag", "switch") else f"one of {kind[1]}" if kind[0] == "choice"
                else "a string" if kind[0] == "str"
                else f"a comma-separated list of {', '.join(presets.DIFFAUG_OPS)}" if kind[0] == "ops"
                else f"a valid {flag(key)}")
        nullable = filled[key] is None
        checks[key] = (lambda value, kind=kind, nullable=nullable: (value is None and nullable) or accepts(kind, value),
                       what)
    return checks
