"""Evaluate a training run, and compare it with other image sets, against held-out real faces.

    python evaluate.py outputs/<run>                              # the run vs random noise
    python evaluate.py outputs/<run> random gaussian hypergan:hg_samples.npy other:faces.zip
    python evaluate.py outputs/<run> --curve --n 1000             # FID/SWD of each snapshot vs images and minutes

Each system after the first run directory is `random` (uniform noise), `gaussian` (noise matched to the
data's colour statistics), another run directory, or NAME:PATH for samples from any other GAN
(a .npy of uint8 (N, S, S, 3), a folder or a zip of images, or a generator .keras file). Every system
is scored against the same held-out reals (half A of the holdout); half B of the holdout is always a row
("real"), so each metric's floor is on the table. Writes to <first run>/eval/ (or --out): report.md,
metrics.json, losses.png, comparison.png. With --curve: the generator snapshots train.py keeps
(--snapshot-every) scored one by one against images seen and training minutes, in curve.md, curve.json
and curve.png.
"""
import argparse
import os
import sys

from facegan import cli, data_io, evaluation, run_lock, run_state

@cli.main_wrapper
def main(argv=None):
    parser = argparse.ArgumentParser(usage="python evaluate.py RUN [SYSTEM ...] [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("run", metavar="RUN", help="run directory made by train.py")
    parser.add_argument("systems", nargs="*", default=[], metavar="SYSTEM",
                        help="random, gaussian, a run directory or NAME:PATH (default random); --curve: runs")
    parser.add_argument("--n", type=cli.int_in(20), default=2000, help="samples per system")
    parser.add_argument("--real", default=None, metavar="PATH", help="held-out real images (default the run's)")
    parser.add_argument("--seed", type=cli.seed, default=0, metavar="N", help="seed of samples, splits and judge")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN/eval)")
    parser.add_argument("--no-quality", action="store_true",
                        help="D and judge accuracy only: no SWD, MS-SSIM, face rate, FID (faster)")
    parser.add_argument("--inception", default=None, metavar="PATH",
                        help="FID with the TF graph classify_image_graph_def.pb (default the Keras port)")
    parser.add_argument("--curve", action="store_true",
                        help="instead: score each run's generator snapshots against images seen")
    args = parser.parse_intermixed_args(argv)  # runs may follow --curve
    if args.curve and args.no_quality:
        parser.error("--curve computes the quality metrics: drop --no-quality")
    config = run_state.load_config(args.run)  # a run directory, before its lock is taken
    if isinstance(config.get("image_size"), int):  # what --n asks for, checked before any of it is made
        data_io.check_memory(evaluation.scoring_memory(args.n, config["image_size"],
                                                       1 if args.curve else len(args.systems or ["random"]) + 2,
                                                       quality=args.curve or not args.no_quality),
                             f"scoring {args.n:,} images per set", "give a smaller --n")
    with run_lock.hold_if_inside(args.run, args.out or os.path.join(args.run, "eval"), "evaluate.py"):
        if args.curve:
            evaluation.curve([args.run, *args.systems], args.n, args.seed, args.out, args.real, args.inception)
        else:
            evaluation.evaluate(args.run, args.systems or ["random"], args.n, args.seed, args.out, args.real,
                                quality=not args.no_quality, inception_path=args.inception)
    return 0

if __name__ == "__main__":
    sys.exit(main())
