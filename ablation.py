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
import functools
import json
import os
import signal
import subprocess
import sys
import time

import cli
import data_io
import run_state

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
}


# The long-budget ablation (python ablation.py --set long: 50 epochs): one change each on top of --preset best,
# with the paper beside it.
BEST = ["--preset", "best"]
LONG_ROWS = {
    "long_dcgan": ("the paper (--preset dcgan)", ["--preset", "dcgan"]),
    "long_best": ("--preset best", BEST),
    "long_r1": ("--preset best + lazy R1 (gamma 1, every 16th D update)", [*BEST, "--r1", "1", "--r1-every", "16"]),
    "long_sn_hinge": ("--preset best + spectral norm in D + hinge loss", [*BEST, "--spectral-norm", "--loss", "hinge"]),
    "long_lecam": ("--preset best + LeCam 0.3", [*BEST, "--lecam", "0.3"]),
    "long_bcr": ("--preset best + bCR 10", [*BEST, "--bcr", "10"]),
    "long_diffaug3": ("--preset best with DiffAugment color, translation, cutout",
                      [*BEST, "--diffaug", "color,translation,cutout"]),
    "long_ms10": ("--preset best with mode seeking 10", [*BEST, "--mode-seeking", "10"]),
}
SETS = {"short": (list(ROWS), 10), "long": (list(LONG_ROWS), 50)}  # rows, epochs
ROWS.update(LONG_ROWS)


def run_dir(out, row, seed):
    return os.path.join(out, f"abl_{row}_s{seed}")


def epochs_done(path):
    history = run_state.read_history(path) if os.path.isdir(path) else None
    return history["epoch"] if history else 0


def train_row(out, row, seed, epochs, batch_size, data, extra=()):
    """Train (or finish) one row's run with train.py, in a subprocess as a user would."""
    path = run_dir(out, row, seed)
    if epochs_done(path) >= epochs:
        return
    if os.path.exists(os.path.join(path, "config.json")):
        command = ["--resume", path, "--epochs", str(epochs)]
    else:
        command = ["--data", data, "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed),
                   "--out", out, "--name", os.path.basename(path), *EMA, *ROWS[row][1], *extra]
    print(f"training {row} seed {seed}: python train.py {' '.join(command)}", flush=True)
    code = run_train([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"),
                      *command])
    if code == cli.EXIT_INTERRUPTED or _passed_on:
        print(f"train.py stopped {path} with a checkpoint; the same ablation.py command continues it", flush=True)
        raise KeyboardInterrupt
    if code:
        raise data_io.DataError(f"train.py exited with code {code} training {row} seed {seed} (its message is above)")


_child = None  # the train.py process running now: the SIGINT and SIGTERM ablation.py gets are passed on to it
_STARTING, _pending = "starting", []  # _child while it starts, and the signals that came meanwhile
_passed_on = []  # the signals passed on: ablation.py stops once the run they stopped has ended


def run_train(argv):
    """Run train.py to its end; returns its exit code. It runs in a process group of its own, so that a
    Ctrl-C at the terminal reaches it once, passed on by ablation.py (a second one would stop it before its
    checkpoint), and ablation.py waits for it whatever it is sent."""
    global _child
    _child = _STARTING
    try:
        _child = subprocess.Popen(argv, process_group=0)
    except BaseException:
        _child = None
        raise
    try:
        while _pending:
            _child.send_signal(_pending.pop())
        return _child.wait()
    finally:
        if _child.poll() is None:  # ablation.py itself failed: stop the run the way a signal does
            _child.terminate()
            _child.wait()
        _child = None


def _pass_on_signal(signum, frame):
    if _child is None or (_child is not _STARTING and _child.poll() is not None):
        raise KeyboardInterrupt
    if _child is _STARTING:
        _pending.append(signum)
    else:
        _child.send_signal(signum)
    _passed_on.append(signum)
    print(f"\nablation.py: {signal.Signals(signum).name} passed on to train.py; waiting for its checkpoint ...",
          flush=True)


def passing_signals_to_train(main):
    """Decorate main: while it runs, SIGINT and SIGTERM go to the train.py run in progress (or, between runs,
    stop ablation.py as Ctrl-C does)."""
    @functools.wraps(main)
    def wrapped(argv=None):
        _passed_on.clear()
        previous = {sig: signal.signal(sig, _pass_on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return main(argv)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return wrapped


def score(out, rows, seeds, n, eval_seed=0, fid=True):
    """One table row per (recipe, seed, raw/EMA generator), all against the same reference reals; with FID/KID
    of each row's n images when `fid` and an Inception network loads."""
    import evaluate
    import metrics
    first = next(run_dir(out, r, s) for r in rows for s in seeds if epochs_done(run_dir(out, r, s)))
    config = run_state.load_config(first, required=("image_size", "holdout"))
    holdout = data_io.load_image_array(config["holdout"], config["image_size"])
    reference, real_b = evaluate.split_holdout(holdout, eval_seed)
    fid_network, reference_features = None, None
    if fid:
        engines, _ = evaluate.load_fid_engines()
        if engines:
            fid_network = engines[0][1]
            reference_features = metrics.inception_features(reference, fid_network)
    results, pictures = [], [("real (held out)", real_b)]
    candidates = [("real", "held-out reals (floor)", None, None, real_b)]
    for row in rows:
        for seed in seeds:
            path = run_dir(out, row, seed)
            if not epochs_done(path):
                continue
            for variant, file in (("", "generator_raw.keras"), (" + EMA", "generator.keras")):
                candidates.append((row, ROWS[row][0] + variant, seed, os.path.join(path, file), None))
    for row, label, seed, model_path, images in candidates:
        if images is None:
            images = data_io.sample_faces(data_io.load_keras_model(model_path, "generator"), n, eval_seed)
            pictures.append((f"{label}, seed {seed}", images))
        result = {"row": row, "system": label, "train_seed": seed, "generator": model_path}
        # Scores are cached beside the generator: re-making the table after one more run re-scores only it.
        cache_path, cache_key = None, None
        if model_path:
            cache_path = os.path.join(os.path.dirname(model_path), "ablation_scores.json")
            stat = os.stat(model_path)
            cache_key = (f"{os.path.basename(model_path)} {stat.st_size} {stat.st_mtime_ns} "
                         f"{config['holdout']} n={n} eval_seed={eval_seed}" + (" fid" if fid_network else ""))
        cache = {}
        if cache_path and os.path.exists(cache_path):
            with open(cache_path) as f:
                cache = json.load(f)
        if cache_key in cache:
            print(f"scored before: {label} (seed {seed})", flush=True)
            result.update(cache[cache_key])
        else:
            print(f"scoring {label} (seed {seed}) ...", flush=True)
            scores = evaluate.image_metrics(reference, images[:n], eval_seed, fid_network, reference_features)
            scores["judge_accuracy"], scores["judge_test_n"] = evaluate.judge_accuracy(reference, images[:n],
                                                                                       eval_seed)
            result.update(scores)
            if cache_path:
                data_io.save_json(cache_path, {**cache, cache_key: scores})
        if model_path:
            with open(os.path.join(os.path.dirname(model_path), "history.json")) as f:
                history = json.load(f)
            result["train_seconds"] = round(sum(history["epoch_seconds"]), 1)
            result["epochs"] = history["epoch"]
        results.append(result)
    return reference, results, pictures


def write_table(folder, reference, results, pictures, n, best="best_ms3"):
    import evaluate
    os.makedirs(folder, exist_ok=True)
    columns = [("train_seed", "{}"), ("swd_avg", "{:.1f}"), ("swd_64", "{:.1f}"), ("swd_32", "{:.1f}"),
               ("swd_16", "{:.1f}"), ("ms_ssim_diversity", "{:.3f}"), ("face_rate", "{:.3f}"),
               ("judge_accuracy", "{:.3f}"), ("train_seconds", "{:.0f}")]
    if any("fid" in row for row in results):
        columns[-1:-1] = [("fid", "{:.2f}"), ("kid", "{:.4f}"), ("fid_n", "{}")]
    table = evaluate.markdown_table(results, columns)
    text = [f"# Ablation: {len(reference)} held-out reference faces, {n} samples per row", "", table, "",
            "SWD x1e3 (lower is better; the real row is the floor); MS-SSIM diversity should match the real row; "
            "face_rate: OpenCV Haar detections; judge: 0.5 = indistinguishable; fid / kid: against the same "
            "reference faces, the held-out reals' row being the floor at the same n; train_seconds: time in the "
            "epochs (grids, checkpoints and the data pipeline included).", "", "![samples](ablation.png)", ""]
    with open(os.path.join(folder, "ablation.md"), "w") as f:
        f.write("\n".join(text))
    data_io.save_json(os.path.join(folder, "ablation.json"), {"n": n, "reference_count": len(reference),
                                                            "rows": results})
    evaluate.grids_figure(os.path.join(folder, "ablation.png"), pictures, columns=12, rows=1, stacked=True,
                          title_size=9)
    best_title = "--preset best (EMA generator)"  # its recipe is in README.md; the full label does not fit
    labels = {"--preset dcgan (the paper)": f"{ROWS['dcgan'][0]}, seed 0",
              best_title: f"{ROWS[best][0]} + EMA, seed 0"}
    chosen = [(title, images) for title, label in labels.items() for name, images in pictures if name == label]
    if len(chosen) == 2:
        evaluate.grids_figure(os.path.join(folder, "presets.png"), chosen, columns=6, rows=6, title_size=10)
    print("\n" + table)
    print(f"\nwrote {folder}/ablation.md, ablation.json, ablation.png (and presets.png when both presets' rows "
          "were scored)")


@cli.main_wrapper
@passing_signals_to_train
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="short", choices=sorted(SETS),
                        help="short: the rows behind --preset best, 10 epochs each; long: one change each on top "
                             "of --preset best (lazy R1, spectral norm + hinge, LeCam, bCR, more DiffAugment, "
                             "more mode seeking) and the paper, 50 epochs each")
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS),
                        help="recipe changes to train and score (default: the --set's rows; each also scored with "
                             "its EMA generator)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (one run per row and seed)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run, the budget (default: the --set's)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--data", default=os.path.join("data", "celeba64_train.npy"),
                        help="training array from preprocess.py (its _holdout.npy is the reference)")
    parser.add_argument("--n", type=int, default=250, help="samples per row (at most half the holdout is used as "
                                                           "the reference)")
    parser.add_argument("--out", default="outputs", help="folder of the run directories")
    parser.add_argument("--train-args", default="", metavar="FLAGS",
                        help="extra train.py flags for every run, e.g. \"--g-width 32 --d-width 32\" (the README's "
                             "table uses none)")
    parser.add_argument("--table-only", action="store_true", help="score finished runs only; train nothing")
    parser.add_argument("--no-fid", action="store_true", help="leave FID/KID out of the table")
    args = parser.parse_args(argv)
    args.rows = args.rows or SETS[args.set][0]
    args.epochs = args.epochs or SETS[args.set][1]
    start = time.time()
    try:
        if not args.table_only:
            for seed in args.seeds:
                for row in args.rows:
                    train_row(args.out, row, seed, args.epochs, args.batch_size, args.data, args.train_args.split())
        reference, results, pictures = score(args.out, args.rows, args.seeds, args.n, fid=not args.no_fid)
        write_table(os.path.join(args.out, "ablation"), reference, results, pictures, args.n)
    except (data_io.DataError, subprocess.CalledProcessError, StopIteration) as error:
        print(f"ablation.py: error: {error or 'no finished run to score'}", file=sys.stderr)
        return 2
    print(f"{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
