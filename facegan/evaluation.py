"""Scoring a run and other image sets against held-out real faces: what evaluate.py reports, and the
quality-against-training-length curve of its --curve."""
import os
import re
import time
import zipfile

import numpy as np
from tqdm import tqdm

from facegan import baseline
from facegan import cli
from facegan import data_io
from facegan import inception
from facegan import history as history_log
from facegan import run_state
from facegan import scoring

MIN_HOLDOUT = 20  # held-out images: half are the reference, half the `real` row
MIN_SYSTEM_IMAGES = MIN_HOLDOUT // 2  # a scored set as small as the smallest `real` row
# Bytes the quality metrics hold per byte of a scored set's images while they score it (the SWD pyramid and patch
# descriptors, mostly): what scoring_memory charges, measured with scoring.image_metrics at 64 and 128 px.
SCORING_BYTES_PER_IMAGE_BYTE = 32


def scoring_memory(n, size, sets, quality=True):
    """Bytes that scoring `sets` image sets of n images of size px holds at once: every set's images, and one set's
    scoring work (the quality metrics', or the judge's float copy without them)."""
    image_bytes = n * size * size * 3
    return sets * image_bytes + image_bytes * (SCORING_BYTES_PER_IMAGE_BYTE if quality else 4)


def load_holdout(run_dir, config, real_path=None):
    """(path, uint8 images, notes): --real, else the run's held-out reals, at the run's image size (never
    resized) and with none of its training images; notes: what could not be checked, for the report."""
    real_path = real_path or config.get("holdout")
    if not real_path:
        raise data_io.DataError(f"{run_dir} records no held-out images; pass --real PATH")
    if not os.path.exists(real_path):
        raise data_io.DataError(f"no held-out images for {run_dir} (looked for {real_path}); pass --real PATH")
    holdout = data_io.load_image_array(real_path, config["image_size"], resize=False)
    if len(holdout) < MIN_HOLDOUT:
        raise data_io.DataError(f"only {len(holdout)} held-out images in {real_path}; need at least {MIN_HOLDOUT}")
    note = check_held_out(real_path, holdout, config, run_dir)
    return real_path, holdout, [note] if note else []


def split_holdout(holdout, seed=0):
    """(reference, real_b): a seeded half of the held-out reals to score every system against, and the other
    half, scored as a system itself (the floor of each metric)."""
    order = np.random.default_rng(seed).permutation(len(holdout))
    return holdout[order[: len(order) // 2]], holdout[order[len(order) // 2:]]


def check_held_out(real_path, real, config, run_dir):
    """Refuse real faces that hold any of the run's training images (checked image by image) or are of
    another size: scores against them would measure how well the run learned faces it saw, not how real
    its faces are. Returns a note when the check could not be complete (data_io.check_held_out)."""
    try:
        notes = [data_io.check_held_out(real, real_path, config["image_size"], trained["data"],
                                        trained.get("data_fingerprint"), run_dir)
                 for trained in [config, *config.get("earlier_data", [])]]  # every set the run trained on
        return "; ".join(note for note in notes if note) or None
    except data_io.NotHeldOut as error:
        raise data_io.NotHeldOut(f"{error}; pass --real PATH with real faces the run never trained on") from None


def read_losses(path, keys=None, optional=()):
    """A loss file: a .npy array, or the `keys` (and those of `optional` it has) of an .npz as a dict. A damaged
    one is one line (DataError)."""
    if keys is None:
        return data_io.load_npy(path, "loss file")
    if not zipfile.is_zipfile(path):
        raise data_io.DataError(f"cannot read {path}: not an .npz archive")
    return data_io.load_npz(path, keys, optional)


def check_loss_files(run_dir):
    """Read the loss files plot_losses draws, before any scoring: a damaged one fails now, not at the end."""
    for name in ("d_losses.npy", "g_losses.npy"):
        read_losses(os.path.join(run_dir, name))
    if os.path.exists(os.path.join(run_dir, "steps.npz")):
        read_losses(os.path.join(run_dir, "steps.npz"), history_log.STEP_KEYS[:4], optional=("ada_p",))


def discriminator_scores(discriminator, images, batch_size=128):
    """D's probability of 'real' for each uint8 image, D run as it was trained (models.discriminator_logits)."""
    import models
    return 1.0 / (1.0 + np.exp(-models.discriminator_logits(discriminator, images, batch_size)))


def evaluate(run_dir, systems=("random",), n=2000, seed=0, out=None, real_path=None, quality=True,
             inception_path=None):
    """Score the run's generator and each of `systems` against the run's held-out reals: report.md,
    metrics.json, losses.png and comparison.png in `out` (default RUN/eval). Returns metrics.json's content."""
    start = time.time()
    config = run_state.load_config(run_dir, required=("image_size", "data"))
    real_path, holdout, notes = load_holdout(run_dir, config, real_path)
    out = cli.check_output_folder(out or os.path.join(run_dir, "eval"))  # before minutes of scoring
    check_loss_files(run_dir)
    reference, real_b = split_holdout(holdout, seed)
    discriminator, d_about = data_io.load_model_snapshot(os.path.join(run_dir, "discriminator.keras"))
    named_sets, run_dirs, other_losses, scored_files = gather_systems(run_dir, config, systems, real_b, seed, n)
    notes += discriminator_note(d_about, scored_files[named_sets[1][0]])

    engines, fid_note, fid, agreement = [], "not computed (--no-quality)", None, None
    # FID is biased upward at small n: every row at one n, so the real row is the floor at that n
    fid_n = min(len(images) for _, images in named_sets)
    if quality:
        engines, fid_note = scoring.load_fid_engines(inception_path)
        if engines:
            fid = scoring.FidReference(*engines[0], reference)
            if len(engines) > 1:
                agreement = engines_agreement(engines, reference[:50])
    rows = [score_system(name, images, discriminator, reference, seed, fid, fid_n, quality, scored_files.get(name))
            for name, images in named_sets]

    d_on_holdout = float(np.mean(discriminator_scores(discriminator, holdout) > 0.5))
    plot_losses(run_dir, os.path.join(out, "losses.png"))
    for other in run_dirs[1:]:
        plot_losses(other, os.path.join(out, f"losses_{os.path.basename(os.path.normpath(other))}.png"))
    for name, losses_path in other_losses:
        plot_step_losses(losses_path, os.path.join(out, f"losses_{name}.png"), name)
    grids_figure(os.path.join(out, "comparison.png"), named_sets)
    results = {"run": os.path.abspath(run_dir), "holdout": os.path.abspath(real_path),
               "holdout_count": int(len(holdout)), "reference_count": int(len(reference)),
               "epochs_trained": (scored_files[named_sets[1][0]]["epoch"]  # the scored file's own record
                                  if scored_files[named_sets[1][0]]["epoch"] is not None
                                  else int(len(read_losses(os.path.join(run_dir, "d_losses.npy"))))),
               "seed": seed, "d_accuracy_on_holdout_reals": d_on_holdout, "systems": rows,
               "fid_kid": f"computed with {fid.name}" if fid else f"skipped: {fid_note}",
               "fid_n": fid_n if fid else None,
               "fid_resize": inception.RESIZE if fid else None,
               "fid_engines_max_relative_difference": agreement, "notes": notes,
               "seconds": round(time.time() - start, 1)}
    data_io.save_json(os.path.join(out, "metrics.json"), results)
    columns = report_columns(quality, fid)
    report = evaluation_report(results, run_dir, real_path, len(real_b), columns, quality, engines, fid_note)
    data_io.save_text(os.path.join(out, "report.md"), "\n".join(report))
    print("\n" + markdown_table(rows, columns))
    print(f"\nwrote {out}/report.md, metrics.json, losses.png, comparison.png ({results['seconds']} s)")
    return results


def gather_systems(run_dir, config, systems, real_b, seed, n):
    """([(name, uint8 images)] beginning with the real half B and the run, other run directories among the
    systems, [(name, losses.npz)] of other GANs' samples that have one beside them, {name: what each generator
    file says of itself}), each read and checked before any scoring."""
    size = config["image_size"]
    train_reference = (data_io.load_npy_images(config["data"], "training data", mmap=True)[:5000]
                       if "gaussian" in systems else None)  # the gaussian baseline's colour statistics
    named_sets = [("real (held out)", real_b)]
    name, images, _, about = resolve_system(run_dir, size, train_reference, seed, n)
    named_sets.append((name, images))
    scored_files = {name: about}  # each generator file's digest, in its row: export.py shows only its own FID
    run_dirs, other_losses = [run_dir], []
    for spec in systems:
        name, images, other_run, about = resolve_system(spec, size, train_reference, seed, n)
        named_sets.append((name, images))
        if about:
            scored_files[name] = about
        if other_run:
            check_loss_files(other_run)
            run_dirs.append(other_run)
        elif ":" in spec and os.path.exists(os.path.join(os.path.dirname(spec.partition(":")[2]), "losses.npz")):
            other_losses.append((name, os.path.join(os.path.dirname(spec.partition(":")[2]), "losses.npz")))
            read_losses(other_losses[-1][1], ("d_loss", "g_loss"))
    return named_sets, run_dirs, other_losses, scored_files


def discriminator_note(d_about, g_about):
    """A note for the report when the run's discriminator.keras was saved at another step than the generator it
    judges (train.py saves D with each snapshot, at the end and when stopped; G after every epoch)."""
    if d_about["step"] is None or g_about["step"] is None or d_about["step"] == g_about["step"]:
        return []
    return [f"d_accuracy is the discriminator saved at step {d_about['step']} (epoch {d_about['epoch']} done); the "
            f"generator scored is from step {g_about['step']} (epoch {g_about['epoch']})"]


def score_system(name, images, discriminator, reference, seed, fid, fid_n, quality, about=None):
    """One row of evaluate's table: the run's D on the set, then scoring.score_images."""
    print(f"scoring {name} ({len(images)} images) ...")
    d_scores = discriminator_scores(discriminator, images)
    row = {"system": name, "n": int(len(images)),
           # reals count as caught when D says real; every other set when D says fake
           "d_accuracy": float(np.mean(d_scores > 0.5) if name.startswith("real") else np.mean(d_scores < 0.5)),
           "d_mean": float(d_scores.mean())}
    if about:  # the generator file scored: export.py shows an FID only beside the file it was measured on
        row.update(generator_sha1=about["sha1"], epoch=about["epoch"])
    row.update(scoring.score_images(reference, images, seed, fid, fid_n, quality=quality))
    return row


def report_columns(quality, fid):
    columns = [("n", "{}"), ("d_accuracy", "{:.3f}"), ("judge_accuracy", "{:.3f}")]
    if quality:
        columns += [("swd_avg", "{:.1f}"), ("swd_64", "{:.1f}"), ("swd_32", "{:.1f}"), ("swd_16", "{:.1f}"),
                    ("ms_ssim_diversity", "{:.3f}"), ("face_rate", "{:.3f}")]
        if fid:
            columns += [("fid_n", "{}"), ("fid", "{:.2f}"), ("kid", "{:.4f}"), ("kid_std", "{:.4f}")]
    return columns


def evaluation_report(results, run_dir, real_path, n_real_b, columns, quality, engines, fid_note):
    """report.md's lines: the table of `results` and what each column means."""
    notes = results["notes"]
    report = [f"# Evaluation of `{run_dir}`", "",
              f"Reference: {results['reference_count']} held-out real faces (half A of `{real_path}`); the `real` "
              f"row is the other {n_real_b} (half B). {results['epochs_trained']} epochs trained. "
              f"Seed {results['seed']}.", "",
              markdown_table(results["systems"], columns), "", *[f"**Note**: {note}." for note in notes],
              *[""] * bool(notes),
              "- **d_accuracy**: the run's own discriminator (batch statistics, as in training), the fraction "
              "of the set it classifies correctly (reals as real, everything else as fake).",
              f"- The discriminator calls {results['d_accuracy_on_holdout_reals']:.1%} of all "
              f"{results['holdout_count']} held-out reals real.",
              "- **judge_accuracy**: a fresh small CNN trained on half of (reference reals vs the set) and tested "
              "on the unseen half; 0.5 = indistinguishable from real, 1.0 = always caught.",
              ]
    if quality:
        report += ["- **swd**: sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018), "
                   "x1e3, per level and averaged; lower is closer to the reference.",
                   "- **ms_ssim_diversity**: mean MS-SSIM of random sample pairs; lower is more diverse, and it "
                   "should match the real row.",
                   "- **face_rate**: fraction of images where OpenCV's Haar cascade finds a face.",
                   ] + (fid_report_lines(engines, results["fid_n"], results["reference_count"],
                                         results["fid_engines_max_relative_difference"]) if results["fid_n"]
                        else [f"- **FID/KID skipped**: {fid_note}"])
    report += ["", "![comparison](comparison.png)", "", "![losses](losses.png)", ""]
    return report


def resolve_system(spec, size, train_reference, seed, n):
    """A system spec -> (name, uint8 images, run_dir or None, what its generator file says of itself or None
    (data_io.load_model_snapshot's about))."""
    if spec in ("random", "uniform"):
        return "random uniform", baseline.make_random_images(n, size, "uniform", seed=seed), None, None
    if spec == "gaussian":
        return ("random gaussian", baseline.make_random_images(n, size, "gaussian", train_reference,
                                                                       seed=seed), None, None)
    run = spec if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "config.json")) else None
    if run:
        name, path = os.path.basename(os.path.normpath(spec)), os.path.join(spec, "generator.keras")
    else:
        name, sep, path = spec.partition(":")
        if not sep:
            name, path = os.path.splitext(os.path.basename(os.path.normpath(spec)))[0], spec
    if path.endswith(".keras"):  # a run's generator, or any generator file, e.g. generator_raw.keras (no EMA)
        generator, about = data_io.load_generator_snapshot(path)
        if generator.output_shape[1:3] != (size, size):
            raise data_io.DataError(f"{path} makes {generator.output_shape[1]} px images; this evaluation is at "
                                    f"{size} px")
        return name, data_io.sample_faces(generator, n, seed), run, about
    images = data_io.load_image_array(path, size, limit=n)
    if len(images) < MIN_SYSTEM_IMAGES:
        raise data_io.DataError(f"{path} holds {len(images)} image(s); a system needs at least {MIN_SYSTEM_IMAGES} "
                                "to be scored")
    return name, images, None, None


def engines_agreement(engines, images):
    """Largest difference between two engines' features of `images`, relative to the largest feature."""
    from facegan import metrics
    first, second = (metrics.inception_features(images, engine) for _, engine in engines[:2])
    return float(np.abs(first - second).max() / np.abs(second).max())


def fid_report_lines(engines, fid_n, n_reference, agreement):
    """The report's notes on FID/KID: the network, n, the resize, the floor, and the engines' agreement."""
    lines = [f"- **fid / kid**: Fréchet and kernel Inception distances, 2048-d pool features of the "
             f"{engines[0][0]}; each row's first fid_n = {fid_n} images against all {n_reference} reference "
             f"reals. Images resized {inception.RESIZE}.",
             f"- FID is biased upward at small n: the `real` row is the real-vs-real floor at the same n = {fid_n}; "
             "compare FIDs only at equal n. KID is unbiased (mean and std over subsets of up to 1000 images)."]
    if agreement is not None:
        lines.append(f"- The {engines[1][0]} is here too: its features of 50 reference images differ from the "
                     f"table's by at most {agreement:.2e} of the largest feature.")
    return lines


def markdown_table(rows, columns):
    lines = ["| " + " | ".join(["system"] + [c for c, _ in columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = [row["system"]]
        for key, fmt in columns:
            value = row.get(key)
            cells.append("–" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_losses(run_dir, path):
    """Per-epoch mean D and G losses, smoothed per-step curves, and D(x) / D(G(z))."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d_losses = read_losses(os.path.join(run_dir, "d_losses.npy"))
    g_losses = read_losses(os.path.join(run_dir, "g_losses.npy"))
    epochs = np.arange(1, len(d_losses) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, d_losses, "o-", label="discriminator")
    axes[0].plot(epochs, g_losses, "o-", label="generator")
    axes[0].set(title="mean loss per epoch (d_losses.npy, g_losses.npy)", xlabel="epoch", ylabel="loss")
    steps_path = os.path.join(run_dir, "steps.npz")
    if os.path.exists(steps_path):
        steps = read_losses(steps_path, history_log.STEP_KEYS[:4], optional=("ada_p",))  # runs before ADA lack it
        n = len(steps["d_loss"])
        x = np.arange(1, n + 1) * len(d_losses) / max(n, 1)  # in epochs
        window = max(1, n // 100)

        x_smooth = x[window - 1:]  # a trailing moving average: no dip at the ends

        def smooth(values):
            return np.convolve(values, np.ones(window) / window, mode="valid")
        axes[1].plot(x, steps["d_loss"], color="C0", alpha=0.15)
        axes[1].plot(x, steps["g_loss"], color="C1", alpha=0.15)
        axes[1].plot(x_smooth, smooth(steps["d_loss"]), color="C0", label="discriminator")
        axes[1].plot(x_smooth, smooth(steps["g_loss"]), color="C1", label="generator")
        axes[1].set(title=f"per-step loss (moving average of {window})", xlabel="epoch")
        axes[2].plot(x_smooth, smooth(steps["d_real"]), label="D(x)  real")
        axes[2].plot(x_smooth, smooth(steps["d_fake"]), label="D(G(z))  fake")
        if "ada_p" in steps and steps["ada_p"].any():
            axes[2].plot(x, steps["ada_p"], color="C3", label="ADA's augmentation probability p")
    accuracies = memorisation_history(run_dir)
    if accuracies:
        for (label, values), marker, colour in zip(accuracies.items(), ("s-", "^-"), ("C2", "C4")):
            axes[2].plot(epochs[:len(values)], values, marker, color=colour, markersize=4, label=label)
    axes[2].set(title="discriminator outputs and memorisation", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        if ax.lines:
            ax.legend()
    if axes[2].lines:  # below the panel: its curves fill the whole 0..1 range
        axes[2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small")
    fig.tight_layout()
    data_io.save_figure(path, fig, dpi=100, bbox_inches="tight")
    plt.close(fig)


def memorisation_history(run_dir):
    """{label: per-epoch share of held-out / training reals D called real} from history.json ({} when the run
    did not record it); a D that calls its training reals real but not held-out ones is memorising them."""
    try:
        history = history_log.read_history(run_dir) or {}
    except data_io.DataError:  # a damaged history.json: the plot goes without these curves
        return {}
    found = {}
    for key, label in (("d_holdout_accuracy", "D calls held-out reals real"),
                       ("d_train_accuracy", "D calls training reals real")):
        values = history.get(key)
        if isinstance(values, list) and any(isinstance(v, (int, float)) for v in values):
            found[label] = [v if isinstance(v, (int, float)) else np.nan for v in values]
    return found


def plot_step_losses(losses_path, path, name):
    """Per-step D and G losses of another GAN's run (a losses.npz with d_loss and g_loss beside its samples,
    as hypergan_baseline.py writes), raw and as a moving average."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    losses = read_losses(losses_path, ("d_loss", "g_loss"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, key in enumerate(("d_loss", "g_loss")):
        values = losses[key]
        window = max(1, len(values) // 100)
        ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i}", alpha=0.15)
        ax.plot(np.arange(window, len(values) + 1), np.convolve(values, np.ones(window) / window, mode="valid"),
                color=f"C{i}", label={"d_loss": "discriminator", "g_loss": "generator"}[key])
    ax.set(title=f"{name}: per-step loss", xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    data_io.save_figure(path, fig, dpi=100)
    plt.close(fig)


def grids_figure(path, named_sets, columns=8, rows=4, stacked=False, title_size=None):
    """One labelled grid of `rows` x `columns` images per system: side by side, or with stacked=True one
    above the other."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(named_sets)
    panel = (0.75 * columns, 0.55 + 0.75 * rows) if stacked else (4.2, 0.5 + 4.2 * rows / columns)
    fig, axes = plt.subplots(n if stacked else 1, 1 if stacked else n,
                             figsize=(panel[0], panel[1] * n) if stacked else (panel[0] * n, panel[1]))
    for ax, (name, images) in zip(np.atleast_1d(axes), named_sets):
        ax.imshow(data_io.make_grid(images[:columns * rows], columns=columns))
        ax.set_title(name, fontsize=title_size, loc="left" if stacked else "center")
        ax.axis("off")
    fig.tight_layout()
    data_io.save_figure(path, fig, dpi=110)
    plt.close(fig)


def snapshot_paths(run_dir):
    """[(epoch, path)] of the generator snapshots train.py --snapshot-every kept, oldest first."""
    folder = os.path.join(run_dir, "snapshots")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    matches = [(re.fullmatch(r"generator_epoch_(\d+)\.keras", name), name) for name in names]
    return [(int(match.group(1)), os.path.join(folder, name)) for match, name in matches if match]


def curve(run_dirs, n=1000, seed=0, out=None, real_path=None, inception_path=None):
    """FID, KID, SWD, MS-SSIM diversity and face rate of every generator snapshot of one or more runs, against
    images seen and training minutes, with the real-vs-real floor at the same n: curve.json, curve.md and curve.png in `out`
    (default FIRST_RUN/eval). Every run is scored against the first run's held-out images (or `real_path`).
    Each snapshot's scores are kept in out/curve_cache.json (scoring.ScoreCache): a --curve after more training
    scores only the new snapshots, and one on other data or with another network scores all again."""
    start = time.time()
    run_dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    configs = curve_configs(run_dirs)
    out = cli.check_output_folder(out or os.path.join(run_dirs[0], "eval"))
    snapshots = {run_dir: snapshot_paths(run_dir) for run_dir in run_dirs}
    for run_dir, found in snapshots.items():
        if not found:
            raise data_io.DataError(f"{run_dir} has no generator snapshots (snapshots/generator_epoch_NNN.keras); "
                                    "train with --snapshot-every N")
    real_path, holdout, notes = load_holdout(run_dirs[0], configs[0], real_path)
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        notes += [note for note in [check_held_out(real_path, holdout, config, run_dir)] if note]
    reference, real_b = split_holdout(holdout, seed)
    n = min(n, len(real_b))  # the floor is measured at the same n as every point
    engines, fid_note = scoring.load_fid_engines(inception_path)
    fid = (scoring.FidReference(*engines[0], reference, os.path.join(out, "curve_reference_features.npz"))
           if engines else None)
    cache = scoring.ScoreCache(os.path.join(out, "curve_cache.json"))
    depends_on = scoring.score_depends_on(holdout, n, seed, fid)
    needed = ("n", "swd_avg", "ms_ssim_diversity", "face_rate", *(("fid", "kid") if fid else ()))
    abouts, keys, generators = load_unscored_snapshots(snapshots, cache, depends_on, needed, configs[0]["image_size"])

    def scores(key, make_images):
        row = cache.get(key, needed)
        if row is None:
            images = make_images()
            row = cache.put(key, {"n": int(len(images)),
                                  **scoring.score_images(reference, images, seed, fid, judge=False)})
        return row

    floor = scores(scoring.score_key(**depends_on, images="held-out half B"), lambda: real_b[:n])
    print(f"real vs real at n={n}: SWD {floor['swd_avg']:.1f}" + (f", FID {floor['fid']:.2f}" if fid else ""))
    points = []
    for run_dir, config in zip(run_dirs, configs):
        name = os.path.basename(os.path.normpath(run_dir))
        images_per_epoch = config["steps_per_epoch"] * config["batch_size"]
        speed = training_speed(run_dir)
        for epoch, path in tqdm(snapshots[run_dir], desc=name, unit="generator"):
            row = scores(keys[path], lambda: data_io.sample_faces(
                generators.pop(path) if path in generators else load_snapshot(path, config["image_size"])[0], n,
                seed))
            # as the snapshot records itself: its steps times the batch are the images it saw, whatever the steps
            # per epoch were (a run continued on other data has changed them)
            recorded = abouts[path]
            epoch = epoch if recorded["epoch"] is None else recorded["epoch"]
            seen = epoch * images_per_epoch if recorded["step"] is None else recorded["step"] * config["batch_size"]
            points.append({"system": f"{name} epoch {epoch}", "run": name, "epoch": epoch, "images_seen": seen,
                           **({"train_minutes": round(seen / speed / 60, 2)} if speed else {}), **row})
    results = {"runs": [os.path.abspath(run_dir) for run_dir in run_dirs], "holdout": os.path.abspath(real_path),
               "n": n, "reference_count": int(len(reference)), "floor": floor, "points": points,
               "fid_kid": f"computed with {fid.name}" if fid else f"skipped: {fid_note}", "notes": notes,
               "seconds": round(time.time() - start, 1)}
    write_curve(out, results, run_dirs)
    return results


def training_speed(run_dir):
    """The run's median images/s over its epochs (history.json), or None before its first epoch: the median,
    because an epoch that compiled the step, or shared the CPU for a while, is not the run's pace."""
    history = history_log.read_history(run_dir)
    speeds = [speed for speed in (history or {}).get("images_per_second", []) if speed > 0]
    return float(np.median(speeds)) if speeds else None


def load_unscored_snapshots(snapshots, cache, depends_on, needed, size):
    """({path: what the snapshot file says of itself}, {path: its score key}, {path: generator}): every snapshot
    not yet in `cache` is loaded (and kept for scoring) before the first score, and keyed by the bytes loaded."""
    abouts = {path: data_io.model_file_about(path) for found in snapshots.values() for _, path in found}
    keys = {path: scoring.score_key(**depends_on, generator=about["sha1"]) for path, about in abouts.items()}
    generators = {}
    for path, key in list(keys.items()):
        if not cache.get(key, needed):
            generators[path], abouts[path] = load_snapshot(path, size)
            keys[path] = scoring.score_key(**depends_on, generator=abouts[path]["sha1"])
    return abouts, keys, generators


def curve_configs(run_dirs):
    """The config.json of each run on one curve, checked: one held-out set, so one image size."""
    configs = [run_state.load_config(run_dir, required=("image_size", "data", "steps_per_epoch", "batch_size"))
               for run_dir in run_dirs]
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        if config["image_size"] != configs[0]["image_size"]:
            raise data_io.DataError(f"{run_dir} makes {config['image_size']} px images and {run_dirs[0]} "
                                    f"{configs[0]['image_size']} px: runs on one curve are scored against one "
                                    "held-out set, at one size")
    return configs


def load_snapshot(path, size):
    """(a snapshot's generator, what its file says of itself), refused in one line unless it makes `size` px
    images."""
    generator, about = data_io.load_generator_snapshot(path)
    if generator.output_shape[1] != size:
        raise data_io.DataError(f"{path} makes {generator.output_shape[1]} px images; the curve is at {size} px")
    return generator, about


def write_curve(out, results, run_dirs):
    """curve.json, curve.png and curve.md of a curve's results."""
    data_io.save_json(os.path.join(out, "curve.json"), results)
    points, floor, n, notes = results["points"], results["floor"], results["n"], results["notes"]
    plot_curve(os.path.join(out, "curve.png"), points, floor)
    columns = [("images_seen", "{:,}"), ("train_minutes", "{:.1f}"), ("swd_avg", "{:.1f}"), ("ms_ssim_diversity", "{:.3f}"),
               ("face_rate", "{:.3f}")]
    columns += [("fid", "{:.2f}"), ("kid", "{:.4f}")] if "fid" in floor else []
    table = markdown_table([*points, {"system": "real (held out)", **floor}], columns)
    data_io.save_text(os.path.join(out, "curve.md"),
                      f"# Quality against training length: {', '.join(f'`{r}`' for r in run_dirs)}\n\n{n} samples "
                      f"per snapshot against {results['reference_count']} held-out reals; the `real` row is {n} "
                      f"other held-out reals (the floor at this n).\n\n{table}\n\n"
                      + "".join(f"**Note**: {note}.\n\n" for note in notes) + "![curve](curve.png)\n")
    print("\n" + table + f"\n\nwrote {out}/curve.md, curve.json, curve.png ({results['seconds']} s)")


def plot_curve(path, points, floor):
    """FID (when computed) and average SWD against images seen, one line per run, each panel with the
    real-vs-real floor; below them the same against training minutes, where every run recorded its speed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [key for key in ("fid", "swd_avg") if key in floor]
    axes_x = ["images_seen"] + (["train_minutes"] if all("train_minutes" in p for p in points) else [])
    figure, axes = plt.subplots(len(axes_x), len(keys), figsize=(5.5 * len(keys), 4 * len(axes_x)), squeeze=False)
    runs = list(dict.fromkeys(p["run"] for p in points))
    # the default cycle repeats its colours after 10 lines
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    for row, x_key in zip(axes, axes_x):
        for ax, key in zip(row, keys):
            for i, run in enumerate(runs):
                mine = [p for p in points if p["run"] == run]
                ax.plot([p[x_key] for p in mine], [p[key] for p in mine], "o-", label=run,
                        color=colours[i % len(colours)])
            ax.axhline(floor[key], color="grey", linestyle="--", label=f"real vs real (n={floor['n']})")
            ax.set(xlabel={"images_seen": "images seen",
                           "train_minutes": "training minutes (at the run's median images/s)"}[x_key],
                   ylabel={"fid": "FID", "swd_avg": "SWD avg (x1e3)"}[key], xlim=(0, None), ylim=(0, None))
            ax.grid(alpha=0.3)
    # one legend below all panels, where it hides no point
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)),
                  fontsize="small", frameon=False)
    figure.tight_layout()
    data_io.save_figure(path, figure, dpi=100, bbox_inches="tight")
    plt.close(figure)
