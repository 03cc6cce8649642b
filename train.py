"""Train the DCGAN (Radford, Metz & Chintala 2015) on 64x64 faces.

    python train.py                          # CelebA if prepared (data/celeba64_train.npy), else the demo faces
    python train.py --preset dcgan           # the 2015 paper's recipe, unchanged
    python train.py --resume outputs/<run>   # continue a run exactly where its last checkpoint left it
    python train.py --dry-run                # a one-step run and its resume, to check a setup

Every setting is a flag; a flag given overrides --preset's value. docs/flags.md explains each one. Everything a run
makes lands in outputs/<run>/; Ctrl-C or SIGTERM saves a checkpoint and exits 130.
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from facegan import cli
from facegan import data_io
from facegan import run_lock
from facegan import run_setup
from facegan import run_state
from facegan import settings
from facegan import training_loop


def parse_args(argv=None):
    return settings.parse_args(argv, description=__doc__)


def build_parser():
    return settings.build_parser(__doc__)


def train(args):
    """Train per args (from parse_args), after checking every input and the output folder; a new run that
    fails before its first checkpoint leaves nothing behind. The run directory is locked while this process
    works on it (run_lock): a second train.py on it is refused. Returns (run_dir, exit code)."""
    run_setup.check_backend({"strategy": args.strategy, "logical_cpus": args.logical_cpus}, resume=False)
    strategy = (run_setup.make_strategy(args.strategy, args.logical_cpus)
                if run_setup.keras_backend() == "tensorflow" else None)
    chief = run_setup.is_chief(strategy)
    if args.resume and chief:
        run_state.load_config(args.resume)  # a run directory (not any folder) before its lock is taken
    with run_lock.hold(args.resume, "train.py --resume") if args.resume and chief else contextlib.nullcontext():
        run_dir, config, images = run_setup.prepare_run(args, new_run_check=chief)
        run_setup.check_backend(config, resume=bool(args.resume))
        replicas = strategy.num_replicas_in_sync if strategy else 1
        if config["batch_size"] % replicas:
            raise data_io.DataError(f"--batch-size {config['batch_size']} does not split evenly over {replicas} "
                                    "replicas")
        if not chief:
            return run_dir, training_loop.training_loop(run_dir, config, images, strategy, chief, bool(args.resume))
        if args.resume:
            cli.check_output_folder(run_dir)
            return run_dir, training_loop.training_loop(run_dir, config, images, strategy, chief, True)
        new_folders = missing_folders(run_dir)
        cli.check_output_folder(run_dir)
        with run_lock.hold(run_dir, "train.py"):
            run_setup.check_new_run_dir(run_dir)  # again, now that no other process can start a run there
            try:
                return run_dir, training_loop.training_loop(run_dir, config, images, strategy, chief, False)
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


def checkpoint_state(run_dir):
    """What a stopped run left to resume from, as said on disk."""
    if not os.path.isdir(run_dir):
        return "no checkpoint was saved, and the new run's folder was removed"
    newest = run_state.latest_checkpoint(run_dir)
    if newest is None:
        return f"no checkpoint was saved in {run_dir}"
    return (f"its newest checkpoint, {newest}, is from before the divergence (resuming from it would repeat the "
            "same steps)")


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dry_run:
            return dry_run(args)
        _, code = train(args)
        return code
    except run_setup.NothingToDo as message:
        print(message)
        return 0
    except training_loop.Diverged as error:
        print(f"train.py: training diverged: {error}; {checkpoint_state(error.run_dir)}. Start again with another "
              "--seed or a lower --lr.", file=sys.stderr)
        return training_loop.EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
