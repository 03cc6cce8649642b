"""The ablation behind `--preset best`: train one run per recipe change at a fixed budget, then score each
generator against the same held-out reals.

    python ablation.py                                  # every row, seed 0, 10 epochs, batch 128, n 250
    python ablation.py --rows dcgan diffaug --seeds 1   # repeat two rows with another seed
    python ablation.py --table-only                     # re-score the finished runs, train nothing
    python ablation.py --set long --n 1000              # the long-budget rows: 50 epochs each

Each training run keeps an EMA copy of the generator (it changes no training step), so one run gives two
rows: its trained generator (generator_raw.keras) and its averaged one (generator.keras). Rows are scored
with SWD, MS-SSIM, face rate and a judge CNN, and with FID/KID when evaluate.py's Inception network is
available. Runs land in
outputs/abl_<row>_s<seed>/ and are resumed if interrupted; the table goes to outputs/ablation/ (markdown,
JSON, a PNG with 12 samples per row, and presets.png: the paper vs --preset best from the same noise).
"""
import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import time

from facegan import cli
from facegan import data_io
from facegan import presets
from facegan import history as history_log
from facegan import run_lock
from facegan import run_state
from facegan import scoring
from facegan import settings
from facegan import training_data

EMA = ["--ema", "0.999"]
# translation + G lr 4e-4 + label smoothing (row fastg_smooth): the base of the last rows
SMOOTH = ("+ DiffAugment (translation) + G lr 4e-4 + label smoothing 0.1",
          ["--diffaug", "translation", "--g-lr", "4e-4", "--label-smoothing", "0.1"])
# name -> (description, train.py flags beyond the paper)
ROWS = {
    "dcgan": ("the paper", []),
    "diffaug": ("+ DiffAugment (color, translation, cutout)", ["--diffaug", "color,translation,cutout"]),
    "translation": ("+ DiffAugment (translation only)", ["--diffaug", "translation"]),
    "transcut": ("+ DiffAugment (translation, cutout)", ["--diffaug", "translation,cutout"]),
    "hinge": ("+ hinge loss", ["--loss", "hinge"]),
    "r1": ("+ R1 penalty, gamma 1", ["--r1", "1"]),
    "ttur": ("+ TTUR (D 4e-4, G 1e-4)", ["--d-lr", "4e-4", "--g-lr", "1e-4"]),
    "sn": ("+ spectral norm in D (no D batch norm)", ["--spectral-norm"]),
    # On top of the best row so far (translation DiffAugment), one change each:
    "trans_mbstd": ("+ DiffAugment (translation) + minibatch std in D (whole batch)",
                    ["--diffaug", "translation", "--minibatch-std", "--minibatch-std-group", "0"]),
    "trans_smooth": ("+ DiffAugment (translation) + one-sided label smoothing 0.1",
                     ["--diffaug", "translation", "--label-smoothing", "0.1"]),
    "trans_fastg": ("+ DiffAugment (translation) + G lr 4e-4", ["--diffaug", "translation", "--g-lr", "4e-4"]),
    # On top of translation + G lr 4e-4:
    "fastg_smooth": (SMOOTH[0], SMOOTH[1]),
    # On top of fastg_smooth, for diversity:
    "best_ms": (SMOOTH[0] + " + mode seeking 1", [*SMOOTH[1], "--mode-seeking", "1"]),
    "best_ms3": (SMOOTH[0] + " + mode seeking 3", [*SMOOTH[1], "--mode-seeking", "3"]),
    "best_mbstd4": (SMOOTH[0] + " + minibatch std (groups of 4)", [*SMOOTH[1], "--minibatch-std"]),
    # best_ms3 with G's upsampling as resize + convolution: --preset best since the long-run study
    # (docs/training_length.md)
    "best_resize": (SMOOTH[0] + " + mode seeking 3 + resize upsampling",
                    [*SMOOTH[1], "--mode-seeking", "3", "--upsample", "resize"]),
}


# The long-budget ablation (python ablation.py --set long: 50 epochs): one change each on top of --preset best,
# with the paper beside it.
BEST = ["--preset", "best"]
LONG_ROWS = {
    "long_dcgan": ("the paper (--preset dcgan)", ["--preset", "dcgan"]),
    "long_best": ("--preset best", BEST),
    "long_r1": ("--preset best + lazy R1 (gamma 1, every 16th D update)", [*BEST, "--r1", "1", "--r1-every", "16"]),
    "long_sn_hinge": ("--preset best + spectral norm in D + hinge loss", [*BEST, "--spectral-norm", "--loss", "hinge"]),
    "long_lecam": ("--preset best + LeCam 0.01", [*BEST, "--lecam", "0.01"]),
    "long_bcr": ("--preset best + bCR 10", [*BEST, "--bcr", "10"]),
    "long_diffaug3": ("--preset best with DiffAugment color, translation, cutout",
                      [*BEST, "--diffaug", "color,translation,cutout"]),
    "long_ms10": ("--preset best with mode seeking 10", [*BEST, "--mode-seeking", "10"]),
    "long_transposed": ("--preset best with the paper's transposed-convolution upsampling",
                        [*BEST, "--upsample", "transposed"]),
}
SETS = {"short": (list(ROWS), 10), "long": (list(LONG_ROWS), 50)}  # rows, epochs
ROWS.update(LONG_ROWS)


def run_dir(out, row, seed):
    return os.path.join(out, f"abl_{row}_s{seed}")


def epochs_done(path):
    history = history_log.read_history(path) if os.path.isdir(path) else None
    return history["epoch"] if history else 0


def new_run_flags(out, row, seed, epochs, batch_size, data, extra=()):
    """The train.py flags of a row's run."""
    return ["--data", data, "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed),
            "--out", out, "--name", os.path.basename(run_dir(out, row, seed)), *EMA,
            *([] if "--preset" in ROWS[row][1] else ["--preset", "dcgan"]), *ROWS[row][1], *extra]


# train.py flags that --train-args may not give: ablation.py sets them for each run, or they make a row's
# recipe (with presets.RECIPE_KEYS)
STUDY_FLAGS = {**dict.fromkeys(("seed", "epochs", "batch_size"), "ablation.py sets it (--seeds, --epochs, "
                                                                  "--batch-size)"),
               **dict.fromkeys(("data", "holdout", "demo"), "ablation.py trains on --data and scores against its "
                                                            "_holdout.npy"),
               **dict.fromkeys(("out", "name", "resume", "dry_run"), "ablation.py names and resumes each run "
                                                                     "(--out/abl_<row>_s<seed>)"),
               **dict.fromkeys(("preset", "lr", "beta1", "beta2"), "a row's recipe is its --rows entry")}


def parse_train_args(flags):
    """train.py's parse of --train-args FLAGS, refused in one line (DataError) when train.py would refuse
    them or when they give a flag of STUDY_FLAGS."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parsed = settings.parse_args(list(flags))
    except SystemExit:
        message = (stderr.getvalue().strip().splitlines() or ["--help is not a training flag"])[-1]
        raise data_io.DataError(f"--train-args {' '.join(flags)!r}: {message.partition('error: ')[2] or message}")
    refused = {**dict.fromkeys(presets.RECIPE_KEYS, STUDY_FLAGS["preset"]), **STUDY_FLAGS}
    for key in parsed.given_flags:
        if key in refused:
            raise data_io.DataError(f"--train-args may not give --{key.replace('_', '-')}: {refused[key]}")
    return parsed


def planned_settings(out, row, seed, epochs, batch_size, data, extra=()):
    """What train.py records in config.json for this row and seed (its model, recipe, seed, batch size...):
    a run found in the row's folder must have these settings to stand for the row."""
    config = settings.settings(settings.parse_args(new_run_flags(out, row, seed, epochs, batch_size, data, extra)),
                            demo=False)
    config["g_lr"], config["d_lr"] = config["g_lr"] or config["lr"], config["d_lr"] or config["lr"]
    return {key: config[key] for key in settings.KEPT_ON_RESUME if not (key == "precision" and config[key] == "auto")}


def check_run(path, planned, data_fingerprint, epochs):
    """Refuse a run in a row's folder that is not that row of this study: other settings than `planned`,
    other training data (when `data_fingerprint` is known), or more epochs than `epochs`."""
    config = run_state.load_config(path)
    differs = [f"{key} {config.get(key)!r} (this study: {value!r})" for key, value in planned.items()
               if config.get(key) != value]
    if data_fingerprint and config.get("data_fingerprint") != data_fingerprint:
        differs.append("other training data than --data")
    if epochs_done(path) > epochs:
        differs.append(f"{epochs_done(path)} epochs trained (this study: {epochs})")
    if differs:
        raise data_io.DataError(f"{path} was not trained as this study's row: {'; '.join(differs)}; give the "
                                "flags it was trained with, or another --out")


def study_data(data, table_only=False):
    """The fingerprint of the training data --data, checked before any training, with the _holdout.npy beside
    it that every row is scored against (at least evaluation.MIN_HOLDOUT images, at the training images' size,
    none of them a training image). With table_only, None when --data is absent (nothing is trained)."""
    from facegan import evaluation
    if table_only and not os.path.exists(data):
        return None
    images = data_io.load_npy_images(data, "training data", hint="run preprocess.py first", mmap=True)
    if not table_only:
        holdout_path = training_data.default_holdout(data)
        if not holdout_path or not os.path.isfile(holdout_path):
            raise data_io.DataError(f"no _holdout.npy beside {data}: ablation.py scores every row against the held-out "
                                    "images preprocess.py writes beside its PREFIX_train.npy")
        holdout = data_io.load_image_array(holdout_path, images.shape[1], resize=False)
        if len(holdout) < evaluation.MIN_HOLDOUT:
            raise data_io.DataError(f"only {len(holdout)} held-out images in {holdout_path}; need at least "
                                    f"{evaluation.MIN_HOLDOUT}")
        data_io.check_held_out(holdout, holdout_path, images.shape[1], data, run="the study")
    return data_io.array_fingerprint(images)


def train_row(training, out, row, seed, epochs, batch_size, data, extra=()):
    """Train (or finish) one row's run with train.py, in a subprocess as a user would (`training`: the
    TrainingRuns that runs it)."""
    path = run_dir(out, row, seed)
    if epochs_done(path) >= epochs:
        return
    if os.path.exists(os.path.join(path, "config.json")):
        command = ["--resume", path, "--epochs", str(epochs)]
    else:
        command = new_run_flags(out, row, seed, epochs, batch_size, data, extra)
    print(f"training {row} seed {seed}: python train.py {' '.join(command)}", flush=True)
    code = training.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"),
                         *command])
    if code == cli.EXIT_INTERRUPTED or training.passed_on:
        print(f"train.py stopped {path} with a checkpoint; the same ablation.py command continues it", flush=True)
        raise KeyboardInterrupt
    if code:
        raise data_io.DataError(f"train.py exited with code {code} training {row} seed {seed} (its message is above)")


class TrainingRuns:
    """The train.py run in progress, one at a time, and the SIGINT and SIGTERM that ablation.py gets while it
    is the context (with TrainingRuns() as training: ...): passed on to the run, or, between runs, stopping
    ablation.py as Ctrl-C does."""
    STARTING = "starting"  # `child` while the process starts

    def __init__(self):
        self.child = None  # the train.py process running now
        self.pending = []  # the signals that came while it started
        self.passed_on = []  # the signals passed on: ablation.py stops once the run they stopped has ended
        self.previous_handlers = {}

    def __enter__(self):
        self.previous_handlers = {sig: signal.signal(sig, self.pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)

    def run(self, argv):
        """Run train.py to its end; returns its exit code. It runs in a process group of its own, so that a
        Ctrl-C at the terminal reaches it once, passed on by ablation.py (a second one would stop it before its
        checkpoint), and ablation.py waits for it whatever it is sent."""
        self.child = self.STARTING
        try:
            self.child = subprocess.Popen(argv, process_group=0)
        except BaseException:
            self.child = None
            raise
        try:
            while self.pending:
                self.child.send_signal(self.pending.pop())
            return self.child.wait()
        finally:
            if self.child.poll() is None:  # ablation.py itself failed: stop the run the way a signal does
                self.child.terminate()
                self.child.wait()
            self.child = None

    def pass_on(self, signum, frame):
        """The signal handler."""
        if self.child is None or (self.child is not self.STARTING and self.child.poll() is not None):
            raise KeyboardInterrupt
        if self.child is self.STARTING:
            self.pending.append(signum)
        else:
            self.child.send_signal(signum)
        self.passed_on.append(signum)
        print(f"\nablation.py: {signal.Signals(signum).name} passed on to train.py; waiting for its checkpoint ...",
              flush=True)


def finished(path, epochs=None):
    """Whether the run at path has trained `epochs` epochs (any, when None); a partly trained one is left out
    of the table with a note."""
    done = epochs_done(path)
    if done and epochs is not None and done < epochs:
        print(f"note: {path} has trained {done} of {epochs} epochs: left out of the table")
    return bool(done) and (epochs is None or done >= epochs)


def score(out, rows, seeds, n, eval_seed=0, fid=True, epochs=None):
    """One table row per (recipe, seed, raw/EMA generator) of the runs that trained `epochs` epochs (any when
    None), all against the same reference reals; with FID/KID of each row's n images when `fid` and an
    Inception network loads. Each row's seed, epochs and recipe are read from its run's files."""
    from facegan import evaluation
    runs = [(row, seed, run_dir(out, row, seed)) for row in rows for seed in seeds]
    runs = [(row, seed, path) for row, seed, path in runs if finished(path, epochs)]
    if not runs:
        raise data_io.DataError("no finished run to score" + (f" ({epochs} epochs)" if epochs else ""))
    holdout, notes = study_holdout([path for _, _, path in runs])
    reference, real_b = evaluation.split_holdout(holdout, eval_seed)
    fid_reference = None
    if fid:
        engines, _ = scoring.load_fid_engines()
        if engines:
            fid_reference = scoring.FidReference(*engines[0], reference)
    depends_on = scoring.score_depends_on(holdout, n, eval_seed, fid_reference)
    needed = ("swd_avg", "judge_accuracy", *(("fid",) if fid_reference else ()))
    results, pictures = [], [("real (held out)", real_b)]
    candidates = [("real", "held-out reals (floor)", None, None, real_b)]
    for row, seed, path in runs:
        for variant, file in (("", "generator_raw.keras"), (" + EMA", "generator.keras")):
            candidates.append((row, ROWS[row][0] + variant, seed, os.path.join(path, file), None))
    for row, label, seed, model_path, images in candidates:
        about = None
        if images is None:  # the scores are keyed by, and the row reports, the bytes loaded here (about)
            generator, about = data_io.load_model_snapshot(model_path, "generator")
            images = data_io.sample_faces(generator, n, eval_seed)
            pictures.append((f"{label}, seed {seed}", images))
        result = {"row": row, "system": label, "train_seed": seed, "generator": model_path}
        scores, cache = None, None
        if model_path:  # its scores are kept beside it: re-making the table after one more run re-scores only it
            cache = scoring.ScoreCache(os.path.join(os.path.dirname(model_path), "ablation_scores.json"))
            key = scoring.score_key(**depends_on, generator=about["sha1"])
            scores = cache.get(key, needed)
        if scores:
            print(f"scored before: {label} (seed {seed})", flush=True)
        else:
            print(f"scoring {label} (seed {seed}) ...", flush=True)
            scores = scoring.score_images(reference, images[:n], eval_seed, fid_reference)
            if cache:
                cache.put(key, scores)
        result.update(scores)
        if model_path:
            result.update(recorded_run(os.path.dirname(model_path), about))
        results.append(result)
    for note in notes:
        print(f"note: {note}")
    return reference, results, pictures, notes


def study_holdout(paths):
    """(uint8 images, notes): the held-out reals the first run records, which every row is scored against,
    checked to hold no training image of any of the runs (notes: what could not be checked)."""
    config = run_state.load_config(paths[0])
    if not config.get("holdout"):
        raise data_io.DataError(f"{paths[0]} records no held-out images to score against")
    holdout = data_io.load_image_array(config["holdout"], config["image_size"], resize=False)
    by_data = {}  # one run per training set: the held-out images must hold none of its images
    for path in paths:
        by_data.setdefault(run_state.load_config(path).get("data_fingerprint"), path)
    notes = []
    for path in by_data.values():
        trained = run_state.load_config(path)
        notes += [note for note in [data_io.check_held_out(holdout, config["holdout"], config["image_size"],
                                                           trained["data"], trained.get("data_fingerprint"), path)]
                  if note]
    return holdout, notes


def recorded_run(path, about):
    """What the run at `path` recorded, not what this study asked for: its epochs (as the scored generator file
    records them, `about`), time in them, seed, precision and recipe."""
    history = history_log.read_history(path)
    config = run_state.load_config(path)
    epochs = history["epoch"] if about is None or about["epoch"] is None else about["epoch"]
    return {"train_seconds": round(sum(history["epoch_seconds"]), 1), "epochs": epochs,
            "train_seed": config["seed"], "precision": config.get("precision"),
            "recipe": {key: config.get(key) for key in presets.RECIPE_KEYS}}


def write_table(folder, reference, results, pictures, n, best="best_resize", notes=()):
    from facegan import evaluation
    os.makedirs(folder, exist_ok=True)
    columns = [("train_seed", "{}"), ("epochs", "{}"), ("swd_avg", "{:.1f}"), ("swd_64", "{:.1f}"),
               ("swd_32", "{:.1f}"), ("swd_16", "{:.1f}"), ("ms_ssim_diversity", "{:.3f}"), ("face_rate", "{:.3f}"),
               ("judge_accuracy", "{:.3f}"), ("train_seconds", "{:.0f}")]
    if any("fid" in row for row in results):
        columns[-1:-1] = [("fid", "{:.2f}"), ("kid", "{:.4f}"), ("fid_n", "{}")]
    if len({row["precision"] for row in results if row.get("precision")}) > 1:
        columns.insert(2, ("precision", "{}"))
    table = evaluation.markdown_table(results, columns)
    epochs = sorted({row["epochs"] for row in results if row.get("epochs")})
    text = [f"# Ablation: {len(reference)} held-out reference faces, {n} samples per row, "
            f"{' / '.join(map(str, epochs))} epochs each", "", table, "", *[f"**Note**: {note}." for note in notes],
            *[""] * bool(notes),
            "SWD x1e3 (lower is better; the real row is the floor); MS-SSIM diversity should match the real row; "
            "face_rate: OpenCV Haar detections; judge: 0.5 = indistinguishable; fid / kid: against the same "
            "reference faces, the held-out reals' row being the floor at the same n; train_seconds: time in the "
            "epochs (grids, checkpoints and the data pipeline included).", "", "![samples](ablation.png)", ""]
    data_io.save_text(os.path.join(folder, "ablation.md"), "\n".join(text))
    data_io.save_json(os.path.join(folder, "ablation.json"), {"n": n, "reference_count": len(reference),
                                                            "rows": results})
    evaluation.grids_figure(os.path.join(folder, "ablation.png"), pictures, columns=12, rows=1, stacked=True,
                          title_size=9)
    best_title = "--preset best (EMA generator)"  # its recipe is in README.md; the full label does not fit
    labels = {"--preset dcgan (the paper)": f"{ROWS['dcgan'][0]}, seed 0",
              best_title: f"{ROWS[best][0]} + EMA, seed 0"}
    chosen = [(title, images) for title, label in labels.items() for name, images in pictures if name == label]
    if len(chosen) == 2:
        evaluation.grids_figure(os.path.join(folder, "presets.png"), chosen, columns=6, rows=6, title_size=10)
    print("\n" + table)
    print(f"\nwrote {folder}/ablation.md, ablation.json, ablation.png (and presets.png when both presets' rows "
          "were scored)")


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        with TrainingRuns() as training:
            run_study(args, training)
    except (cli.UserError, subprocess.CalledProcessError, StopIteration) as error:
        print(f"ablation.py: error: {error or 'no finished run to score'}", file=sys.stderr)
        return 2
    print(f"{time.time() - start:.0f} s")
    return 0


def run_study(args, training):
    """Check everything before the first training run (the flags, the data, the output folder, and that every
    run already in a row's folder is that row of this study), train the rows' runs, then score them."""
    extra = args.train_args.split()
    parse_train_args(extra)
    folder = cli.check_output_folder(os.path.join(args.out, "ablation"))
    data_fingerprint = study_data(args.data, args.table_only)
    from facegan import evaluation
    size = data_io.load_npy(args.data, mmap=True).shape[1] if os.path.isfile(args.data) else 64
    # every row's samples are kept for the figure: 2 per run, and the reals
    data_io.check_memory(evaluation.scoring_memory(args.n, size, 2 * len(args.rows) * len(args.seeds) + 1),
                         f"scoring {args.n:,} samples per row", "give a smaller --n")
    for seed in args.seeds:
        for row in args.rows:
            if os.path.exists(os.path.join(run_dir(args.out, row, seed), "config.json")):
                check_run(run_dir(args.out, row, seed),
                          planned_settings(args.out, row, seed, args.epochs, args.batch_size, args.data, extra),
                          data_fingerprint, args.epochs)
    if not args.table_only:
        for seed in args.seeds:
            for row in args.rows:
                train_row(training, args.out, row, seed, args.epochs, args.batch_size, args.data, extra)
    with contextlib.ExitStack() as locks:  # scoring writes each run's ablation_scores.json
        for seed in args.seeds:
            for row in args.rows:
                if os.path.exists(os.path.join(run_dir(args.out, row, seed), "config.json")):
                    locks.enter_context(run_lock.hold(run_dir(args.out, row, seed), "ablation.py"))
        reference, results, pictures, notes = score(args.out, args.rows, args.seeds, args.n, fid=not args.no_fid,
                                                    epochs=args.epochs)
    write_table(folder, reference, results, pictures, args.n, notes=notes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(usage="python ablation.py [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--set", default="short", choices=sorted(SETS),
                        help="short: the rows behind --preset best, 10 epochs each; long: 50 epochs each")
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), metavar="ROW",
                        help="rows to train and score (default the --set's; ROWS in ablation.py)")
    parser.add_argument("--seeds", nargs="+", type=cli.seed, default=[0], metavar="N",
                        help="training seeds (one run per row and seed)")
    parser.add_argument("--epochs", type=cli.positive_int, default=None, metavar="N",
                        help="epochs per run (default the --set's); a run that trained more is refused")
    parser.add_argument("--batch-size", type=cli.positive_int, default=128, metavar="N", help="images per step")
    parser.add_argument("--data", default=os.path.join("data", "celeba64_train.npy"), metavar="NPY",
                        help="training array (its _holdout.npy is the reference)")
    parser.add_argument("--n", type=cli.int_in(20), default=250, help="samples per row")
    parser.add_argument("--out", default="outputs", metavar="DIR", help="folder of the run directories")
    parser.add_argument("--train-args", default="", metavar="FLAGS",
                        help="more train.py flags for every run, e.g. \"--g-width 32\" (no recipe flags)")
    parser.add_argument("--table-only", action="store_true", help="score finished runs only; train nothing")
    parser.add_argument("--no-fid", action="store_true", help="leave FID/KID out of the table")
    args = parser.parse_args(argv)
    args.rows = args.rows or SETS[args.set][0]
    args.epochs = args.epochs or SETS[args.set][1]
    return args


if __name__ == "__main__":
    sys.exit(main())
