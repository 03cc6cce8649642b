"""Use a trained generator: sample faces, walk between them, animate training, do face arithmetic, and look
for copied training images.

    python generate.py sample RUN_DIR --n 64                        # a grid, one PNG per face, samples.npy
    python generate.py interpolate RUN_DIR --rows 8 --steps 10      # slerp walks: a PNG grid and a bouncing GIF
    python generate.py progress RUN_DIR                             # a GIF of samples/epoch_*.png
    python generate.py arithmetic RUN_DIR --pick-sheet              # 100 numbered faces to choose from, then
    python generate.py arithmetic RUN_DIR --a 3,17,42 --b 5,8,11 --c 1,2,9     # mean(a) - mean(b) + mean(c)
    python generate.py neighbours RUN_DIR --n 8 --k 5               # faces beside their closest training images

RUN_DIR is a run directory made by train.py. Everything is written to RUN_DIR/generated/ (or --out); it all
runs on a CPU from the saved generator.keras alone (progress needs only samples/, neighbours also the training
.npy). Noise is z ~ N(0, I) from numpy's default_rng(--seed), drawn as evaluate.py draws it: the same seed gives
the same faces in every subcommand (face i of `sample` is face i of the arithmetic sheet and of `neighbours`).
`python generate.py COMMAND --help` explains each flag.
"""
import argparse
import functools
import glob
import os
import re
import sys

import cv2
import numpy as np

from facegan import cli
from facegan import data_io
from facegan import run_lock
from facegan import run_state
from facegan.data_io import DataError

FONT = cv2.FONT_HERSHEY_SIMPLEX
SAMPLE_CHUNK = 1024  # faces made and written at a time by `sample`
MAX_PICTURE_PIXELS = 1 << 26  # the most pixels of pictures (a grid, a GIF's frames) made in memory at once


# ----- the run and its generator ---------------------------------------------------------------------------

def load_generator(run_dir):
    """The run's generator.keras, checked to be a generator."""
    return load_generator_snapshot(run_dir)[0]


def load_generator_snapshot(run_dir):
    """(generator, what its file says of itself: data_io.load_model_snapshot's about) of the run."""
    run_state.load_config(run_dir)
    return data_io.load_generator_snapshot(os.path.join(run_dir, "generator.keras"))


def out_folder(run_dir, out):
    out = out or os.path.join(run_dir, "generated")
    os.makedirs(out, exist_ok=True)
    return out


# ----- pictures: enlarging, labels, GIFs -------------------------------------------------------------------

def resize(picture, scale):
    """Enlarge with nearest neighbour (crisp pixels) or shrink with area averaging."""
    if scale == 1:
        return picture
    interpolation = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    return cv2.resize(picture, None, fx=scale, fy=scale, interpolation=interpolation)


def draw_text(picture, text, x, y, size=0.4):
    """White text with a black outline at (x, y) (baseline left), readable on any face. In place."""
    x, y = int(x), int(y)
    cv2.putText(picture, text, (x, y), FONT, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, (x, y), FONT, size, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def caption(picture, text, height=22):
    """The picture under a white band holding `text` in black, shrunk to fit the width."""
    width = picture.shape[1]
    size = 0.5
    text_width = cv2.getTextSize(text, FONT, size, 1)[0][0]
    if text_width > width - 6:
        size *= (width - 6) / text_width
    band = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(band, text, (3, height - 7), FONT, size, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, picture])


def stack(pictures, axis):
    """Pictures side by side (axis=1, bottoms aligned) or one above the other (axis=0, left aligned),
    padded with white."""
    other = 1 - axis
    longest = max(p.shape[other] for p in pictures)
    padded = []
    for p in pictures:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (longest - p.shape[other], 0) if axis == 1 else (0, longest - p.shape[other])
        padded.append(np.pad(p, pad, constant_values=255))
    return np.concatenate(padded, axis=axis)


def white(height, width):
    return np.full((height, width, 3), 255, np.uint8)


def save_gif(path, frames, duration_ms):
    """An endlessly looping GIF of RGB uint8 frames; duration_ms is one number or one per frame.
    (Pillow merges a frame identical to the one before it into that frame's duration.)"""
    from PIL import Image
    images = [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    data_io.atomic_write(path, lambda tmp: images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0), suffix=".gif")


def grid_columns(n):
    """A pleasant number of columns for n tiles: the smallest divisor of n that is >= sqrt(n)."""
    return next(c for c in range(int(np.ceil(np.sqrt(n))), n + 1) if n % c == 0)


# ----- sample ----------------------------------------------------------------------------------------------

def sample(run, n=64, out=None, seed=0, format="all", columns=None, scale=None):
    """n faces as samples.npy (uint8 (n, S, S, 3), what `evaluate.py NAME:PATH` reads), a grid PNG and/or one
    PNG per face at native size. The faces are made and written SAMPLE_CHUNK at a time, so any n that fits
    on the disk (checked first) takes the same memory. Returns the paths written (of the PNGs, the first and
    the last)."""
    if format in ("npy", "png") and (columns is not None or scale is not None):
        raise DataError(f"--columns and --scale lay out the grid; --format {format} writes no grid")
    columns, scale = columns or 8, 2.0 if scale is None else scale
    generator = load_generator(run)
    size = generator.output_shape[1]
    out = out_folder(run, out)
    if format in ("grid", "all"):
        check_picture_size(grid_shape(n, size, columns), scale, f"a grid of {n:,} faces",
                           "ask for fewer faces, or --format npy/png for many")
    face_bytes = size * size * 3  # and a PNG file takes at most about that, plus its last disk block
    npy_bytes, png_bytes = face_bytes * (format in ("npy", "all")), (face_bytes + 4096) * (format in ("png", "all"))
    data_io.check_free_space(out, n * (npy_bytes + png_bytes), f"{n:,} faces as --format {format}",
                             "ask for fewer faces or give another --out")
    npy_path = os.path.join(out, "samples.npy")
    digits = max(4, len(str(n - 1)))
    png_path = lambda i: os.path.join(out, f"sample_{i:0{digits}d}.png")  # noqa: E731
    grid_faces = []

    def write_faces(npy_file=None):
        z_chunks = data_io.sample_z_chunks(n, generator.input_shape[-1], seed, SAMPLE_CHUNK)
        for start, z in zip(range(0, n, SAMPLE_CHUNK), z_chunks):
            faces = data_io.generate_images(generator, z)
            if npy_file is not None:
                npy_file.write(faces.tobytes())
            if format in ("png", "all"):
                for i, face in enumerate(faces, start):
                    data_io.save_png(png_path(i), face)
            if format in ("grid", "all"):
                grid_faces.append(faces)

    def write_npy(tmp):
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (n, size, size, 3)})
            write_faces(f)
    if format in ("npy", "all"):
        data_io.atomic_write(npy_path, write_npy, suffix=".npy")
    else:
        write_faces()
    paths, shown = ([npy_path], [f"{npy_path} (uint8 {(n, size, size, 3)})"]) if format in ("npy", "all") else ([], [])
    if format in ("grid", "all"):
        paths.append(os.path.join(out, "samples_grid.png"))
        data_io.save_grid(paths[-1], np.concatenate(grid_faces), columns=columns, scale=scale)
        shown.append(paths[-1])
    if format in ("png", "all"):
        paths += [png_path(0), png_path(n - 1)]
        shown.append(f"{png_path(0)} .. {os.path.basename(png_path(n - 1))}")
    print(f"{n} faces from seed {seed}:\n  " + "\n  ".join(shown))
    return paths


def grid_shape(n, size, columns, padding=2):
    """(height, width) of data_io.make_grid's picture of n tiles of size x size in rows of `columns`."""
    rows, columns = max(1, -(-n // columns)), max(1, min(columns, n))
    return rows * (size + padding) + padding, columns * (size + padding) + padding


def check_picture_size(shape, scale, what, hint, count=1):
    """Refuse `count` pictures of (height, width) `shape`, resized by `scale`, that would take more than
    MAX_PICTURE_PIXELS in all: they are made whole in memory, at their own size and then at the scale's (a
    shrunken picture is made at full size first)."""
    pixels = count * max(shape[0] * shape[1], round(shape[0] * scale) * round(shape[1] * scale))
    if pixels > MAX_PICTURE_PIXELS:
        raise DataError(f"{what} would be {pixels:,} pixels, more than the {MAX_PICTURE_PIXELS:,} made in memory "
                        f"at once; {hint}")


# ----- interpolate -----------------------------------------------------------------------------------------

def slerp(z0, z1, t):
    """Spherical interpolation: the point a fraction t of the way from z0 to z1 along the great circle between
    them (Shoemake 1985; for GANs, White 2016 "Sampling generative networks"). t may be an array of fractions
    (the result then has one row per t). Unlike a straight line, which passes near the origin where N(0, I)
    noise never is (a midpoint of two 100-d draws has ~0.71 of their norm), the path keeps a typical norm."""
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    cos = np.dot(z0 / np.linalg.norm(z0), z1 / np.linalg.norm(z1))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:  # (anti)parallel: the great circle is not defined, walk straight
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    return ((np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)).astype(np.float32)


def interpolate(run, rows=8, steps=10, out=None, seed=0, linear=False, duration=120, bounce=True, scale=2):
    """rows walks between two random z: a PNG (one walk per row) and a GIF whose frames are the steps, each
    frame showing every walk at that step. Returns (png path, gif path)."""
    generator = load_generator(run)
    size, hint = generator.output_shape[1], "ask for fewer --rows or --steps, or a smaller --scale"
    check_picture_size(grid_shape(rows * steps, size, steps), scale, f"{rows} walks of {steps} steps", hint)
    check_picture_size(grid_shape(rows, size, grid_columns(rows)), scale, f"a GIF of {rows} walks of {steps} steps",
                       hint, count=2 * steps - 2 if bounce else steps)
    ends = data_io.sample_z(2 * rows, generator.input_shape[-1], seed).reshape(rows, 2, -1)
    t = np.linspace(0.0, 1.0, steps)
    if linear:
        walks = np.stack([(1 - t[:, None]) * a + t[:, None] * b for a, b in ends])
    else:
        walks = np.stack([slerp(a, b, t) for a, b in ends])
    faces = data_io.generate_images(generator, walks.reshape(rows * steps, -1))
    faces = faces.reshape(rows, steps, *generator.output_shape[1:])
    out = out_folder(run, out)
    name = f"interpolate{'_linear' if linear else ''}_seed{seed}"
    png, gif = os.path.join(out, name + ".png"), os.path.join(out, name + ".gif")
    data_io.save_grid(png, faces.reshape(rows * steps, *faces.shape[2:]), columns=steps, scale=scale)
    frames = [resize(data_io.make_grid(faces[:, i], columns=grid_columns(rows)), scale) for i in range(steps)]
    if bounce:  # forth and back again, without showing either end twice in a row
        frames += frames[-2:0:-1]
    save_gif(gif, frames, duration)
    print(f"{rows} {'linear' if linear else 'slerp'} walks of {steps} steps from seed {seed}:\n  {png}\n  {gif} "
          f"({len(frames)} frames)")
    return png, gif


# ----- progress --------------------------------------------------------------------------------------------

def epoch_pngs(run):
    """[(epoch, path)] of the run's samples/epoch_NNN.png, in epoch order."""
    found = []
    for path in glob.glob(os.path.join(run, "samples", "epoch_*.png")):
        match = re.fullmatch(r"epoch_(\d+)\.png", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def progress(run, out=None, duration=400, hold=2000, scale=0.5):
    """One GIF frame per samples/epoch_*.png (the same fixed noise after each epoch), labelled with its epoch;
    the last frame is held for `hold` ms. Returns the GIF path."""
    config = run_state.load_config(run)
    found = epoch_pngs(run)
    if not found:
        raise DataError(f"no samples/epoch_*.png in {run} (has the run finished an epoch?)")
    total = f" / {config['epochs']}" if config.get("epochs") else ""
    frames = []
    for epoch, path in found:
        bgr, reason = data_io.read_image(None, os.path.dirname(path), os.path.basename(path))  # size-checked first
        if bgr is None:
            raise DataError(f"cannot read {path} as an image: {reason}")
        if not frames:  # every frame takes the first one's size
            check_picture_size(bgr.shape[:2], scale, f"a GIF of {len(found)} epoch grids",
                               "give a smaller --scale", count=len(found))
        picture = resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), scale)
        if frames and picture.shape != frames[0].shape:  # a GIF has one size: fit odd ones to the first
            picture = cv2.resize(picture, frames[0].shape[1::-1], interpolation=cv2.INTER_AREA)
        frames.append(picture)
    frames = [caption(f, f"epoch {epoch}{total}", height=28) for f, (epoch, _) in zip(frames, found)]
    gif = os.path.join(out_folder(run, out), "progress.gif")
    save_gif(gif, frames, [duration] * (len(frames) - 1) + [hold])
    print(f"fixed-noise samples of epochs {found[0][0]}..{found[-1][0]} ({len(frames)} frames):\n  {gif}")
    return gif


# ----- arithmetic ------------------------------------------------------------------------------------------

def parse_indices(text, flag, size):
    """'3,17,42' -> [3, 17, 42], each checked to be a face on a sheet of `size`."""
    try:
        indices = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        indices = []
    if not indices:
        raise DataError(f"{flag} {text!r} is not a comma-separated list of face numbers (e.g. 3,17,42)")
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise DataError(f"{flag}: face {bad[0]} is not on the sheet (its faces are numbered 0..{size - 1})")
    return indices


def face_arithmetic(z, a, b, c):
    """mean(z[a]) - mean(z[b]) + mean(z[c]): e.g. smiling woman - neutral woman + neutral man = smiling man.
    Averaging three or so faces per concept, as the paper does, makes the result far more stable than single
    faces."""
    z = np.asarray(z, np.float32)
    return z[list(a)].mean(0) - z[list(b)].mean(0) + z[list(c)].mean(0)


def numbered_sheet(faces, columns=10, scale=2):
    """A grid of the faces, enlarged, each with its index in its top left corner."""
    tiles = [draw_text(resize(face, scale).copy(), str(i), 3, 14) for i, face in enumerate(faces)]
    return data_io.make_grid(np.stack(tiles), columns=columns)


def sheet_paths(out, seed):
    return os.path.join(out, f"arithmetic_sheet_seed{seed}.png"), os.path.join(out, f"arithmetic_sheet_seed{seed}.npz")


def make_sheet(run, out=None, seed=0, sheet_size=100, scale=2):
    """Step 1: a numbered sheet of sheet_size faces, and their z (with the faces and the digest of the generator
    that drew them) in an .npz beside it."""
    generator, about = load_generator_snapshot(run)
    size = generator.output_shape[1]  # the faces are made at their size, then resized into the sheet
    check_picture_size(grid_shape(sheet_size, max(size, round(size * scale)), 10), 1,
                       f"a sheet of {sheet_size:,} faces", "give a smaller --sheet-size or --scale")
    z = data_io.sample_z(sheet_size, generator.input_shape[-1], seed)
    faces = data_io.generate_images(generator, z)
    png, npz = sheet_paths(out_folder(run, out), seed)
    data_io.save_png(png, numbered_sheet(faces, scale=scale))
    data_io.save_npz(npz, {"z": z, "faces": faces, "generator_sha1": np.array(about["sha1"])})
    print(f"{sheet_size} numbered faces from seed {seed}:\n  {png}\n  {npz} (their z)\n"
          f"pick about 3 faces for each concept, e.g.\n  python generate.py arithmetic {run} --seed {seed} "
          f"--a 3,17,42 --b 5,8,11 --c 1,2,9 --names 'smiling woman,neutral woman,neutral man'")
    return png, npz


def read_z_file(path, generator):
    """(z, the sheet's faces or None, the digest of the generator that drew them or None) from a --z-file or a
    saved sheet: z real numbers, all finite, one latent_dim row per face (a sheet's faces one uint8 image per row
    of z, of the generator's size)."""
    drawn_by = None
    try:
        if path.endswith(".npz"):
            saved = data_io.load_npz(path, ["z"], optional=["faces", "generator_sha1"])
            z, faces = saved["z"], saved.get("faces")
            if saved.get("generator_sha1") is not None and saved["generator_sha1"].dtype.kind == "U":
                drawn_by = str(saved["generator_sha1"])
        else:
            z, faces = data_io.load_npy(path, "z file"), None
    except DataError as error:
        raise DataError(f"cannot read z from {path}: {error}") from None
    if z.ndim != 2 or not len(z) or z.shape[1] != generator.input_shape[-1]:
        raise DataError(f"{path} holds z of shape {z.shape}; this generator takes rows of "
                        f"{generator.input_shape[-1]}-d z")
    if z.dtype.kind not in "fiu" or not np.isfinite(z).all():
        raise DataError(f"{path} holds {z.dtype} z with NaN, infinite or non-real values; z must be finite "
                        "real numbers")
    if faces is not None and (faces.dtype != np.uint8 or faces.shape != (len(z), *generator.output_shape[1:])):
        raise DataError(f"{path} holds {faces.dtype} faces of shape {faces.shape}, not one uint8 "
                        f"{generator.output_shape[1:]} face per z: the sheet is damaged; make a new one with "
                        "--pick-sheet")
    return z.astype(np.float32), faces, drawn_by


def arithmetic_figure(concept_faces, mean_faces, results, names, scale=2):
    """Like fig. 7 of the DCGAN paper: each concept's faces in a column with the face of their mean z below,
    then - / + / = and a 3x3 grid of results (the exact result in the centre)."""
    gap = max(2, round(6 * scale))
    tile = round(mean_faces[0].shape[0] * scale)
    panels = []
    for faces, mean, name, operator in zip(concept_faces, mean_faces, names, ("", "-", "+")):
        column = stack([resize(data_io.make_grid(faces, columns=1), scale), white(gap, 1),
                        resize(data_io.make_grid(mean[None], columns=1), scale)], axis=0)
        column = caption(column, name)
        if operator:
            panels.append(operator_column(operator, column.shape[0], tile))
        panels.append(column)
    grid = caption(resize(data_io.make_grid(results, columns=3), scale), " - ".join(names[:2]) + " + " + names[2])
    panels += [operator_column("=", grid.shape[0], tile), grid]
    figure = stack(panels, axis=1)
    figure = np.pad(figure, [(8, 8), (8, 8), (0, 0)], constant_values=255)
    note = "each concept: the picked faces, and below them the face of their mean z; " \
           "right: the result (centre) and 8 with noise added"
    return caption(figure, note, height=20)


def operator_column(symbol, height, tile):
    """A narrow white column with `symbol` centred on its last `tile` pixels (beside the mean faces)."""
    column = white(height, 30)
    cv2.putText(column, symbol, (7, height - tile // 2 + 8), FONT, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    return column


def arithmetic(run, a=None, b=None, c=None, pick_sheet=False, out=None, seed=0, sheet_size=None,
               z_file=None, names=None, noise=None, scale=2):
    """Step 2 (step 1 with pick_sheet): mean(z_a) - mean(z_b) + mean(z_c) over faces numbered on the
    sheet of this seed, rendered with 8 variations (uniform noise of +-noise added, as in the paper).
    The paper added +-0.25 to z ~ U(-1, 1), whose std is 0.58: +-0.43 is the same relative amount for N(0, 1).
    Returns the figure's path (or the sheet's paths)."""
    if pick_sheet:
        given = [flag for flag, value in (("--a", a), ("--b", b), ("--c", c), ("--z-file", z_file),
                                          ("--names", names), ("--noise", noise)) if value is not None]
        if given:
            raise DataError(f"--pick-sheet makes the sheet to choose from: give {given[0]} in a second run")
        return make_sheet(run, out, seed, sheet_size or 100, scale)
    if not (a and b and c):
        raise DataError("give --pick-sheet to make a numbered sheet, or all of --a, --b and --c to use it")
    if z_file and sheet_size is not None:
        raise DataError(f"--sheet-size {sheet_size} draws z from --seed; --z-file {z_file} brings its own")
    names = [n.strip() for n in (names or "A,B,C").split(",")]
    if len(names) != 3:
        raise DataError(f"--names {','.join(names)!r} must be three comma-separated names, e.g. 'A,B,C'")
    noise = 0.43 if noise is None else noise
    generator, about = load_generator_snapshot(run)
    out = out_folder(run, out)
    saved_faces, drawn_by = None, None
    z_file = z_file or (sheet_paths(out, seed)[1] if os.path.exists(sheet_paths(out, seed)[1]) else None)
    if z_file:  # the sheet's saved z, or a z file from elsewhere (.npy of (N, latent_dim), or .npz with "z")
        z, saved_faces, drawn_by = read_z_file(z_file, generator)
        a, b, c = (parse_indices(v, flag, len(z)) for v, flag in ((a, "--a"), (b, "--b"), (c, "--c")))
    else:  # the same z the sheet of this seed was made from: its first rows, as many as the faces picked need
        a, b, c = (parse_indices(v, flag, sheet_size or 100) for v, flag in ((a, "--a"), (b, "--b"), (c, "--c")))
        z = data_io.sample_z(max(a + b + c) + 1, generator.input_shape[-1], seed)
    concept_faces = [data_io.generate_images(generator, z[idx]) for idx in (a, b, c)]
    if saved_faces is not None:
        then = np.concatenate([saved_faces[idx] for idx in (a, b, c)]).astype(np.float32)
        if (drawn_by != about["sha1"] if drawn_by else np.abs(then - np.concatenate(concept_faces)).mean() > 2.0):
            print(f"generate.py: warning: generator.keras has changed since {z_file} was made (more training?): "
                  "the numbers now show other faces; make a new sheet with --pick-sheet", file=sys.stderr)
    means = np.stack([z[idx].mean(0) for idx in (a, b, c)])
    result = face_arithmetic(z, a, b, c)
    variations = result + np.random.default_rng(seed + 1).uniform(-noise, noise, (9, len(result)))
    variations[4] = result
    figure = arithmetic_figure(concept_faces, data_io.generate_images(generator, means),
                               data_io.generate_images(generator, variations),
                               names, scale)
    label = "_".join(f"{flag}{'-'.join(map(str, idx))}" for flag, idx in (("a", a), ("minus", b), ("plus", c)))
    path = os.path.join(out, f"arithmetic_seed{seed}_{label}.png")
    data_io.save_png(path, figure)
    print(f"{names[0]} - {names[1]} + {names[2]} (faces {a} - {b} + {c} of seed {seed}'s sheet):\n  {path}")
    return path


# ----- neighbours ------------------------------------------------------------------------------------------

def nearest_neighbours(queries, images, k=5, chunk=1024):
    """For each query image, the indices and squared L2 distances (pixels as 0..255 numbers) of its k closest
    images, closest first. `images` may be a memory-mapped .npy: it is read chunk by chunk, with
    ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2 as one matrix product per chunk (exact in float64). The queries go
    `chunk` at a time too, so memory stays that of two chunks whatever their number."""
    if len(queries) > chunk:
        found = [nearest_neighbours(queries[start:start + chunk], images, k, chunk)
                 for start in range(0, len(queries), chunk)]
        return np.concatenate([i for i, _ in found]), np.concatenate([d for _, d in found])
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    q_norms = (q * q).sum(1, keepdims=True)
    best_d = np.full((len(q), 0), np.inf)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(images), chunk):
        x = np.asarray(images[start:start + chunk], np.float64).reshape(-1, q.shape[1])
        d = np.maximum(q_norms - 2.0 * q @ x.T + (x * x).sum(1)[None], 0.0)
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(x)), d.shape)], axis=1)
        order = np.argsort(best_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i, best_d


def load_images_mmap(path, size, what):
    images = data_io.load_npy_images(path, what, hint="give its .npy with --data", mmap=True)
    if images.shape[1] != size:
        raise DataError(f"{path} holds {images.dtype} {images.shape}; expected uint8 (N, {size}, {size}, 3)")
    return images


def neighbours(run, n=8, k=5, out=None, seed=0, data=None, scale=2):
    """n faces, each followed by its k nearest training images in pixel space: a generator that copies its
    training set shows (near) duplicates here. Also prints how close held-out real faces come to the training
    set, for scale. Pixel distance favours smooth, average-looking images (a blurry face is fairly close to
    many), so a low number alone is not a copy: look for the same face. Returns the figure's path."""
    config = run_state.load_config(run)
    generator = load_generator(run)
    size = generator.output_shape[1]
    data = data or config.get("data") or ""
    train_images = load_images_mmap(data, size, "training data")
    if k > len(train_images):
        raise DataError(f"--k {k}: {data} holds only {len(train_images)} training images")
    tile = max(size, round(size * scale))  # the faces and neighbours are held at their size, then resized
    check_picture_size((n * (tile + 4) + 20, (k + 1) * tile + 14), 1, f"{n} faces beside {k} neighbours each",
                       "ask for fewer --n or --k, or a smaller --scale")
    faces = data_io.sample_faces(generator, n, seed)
    holdout = config.get("holdout")
    reals = None
    if holdout and os.path.isfile(holdout) and os.path.abspath(data) == os.path.abspath(config.get("data") or ""):
        held = load_images_mmap(holdout, size, "held-out data")
        reals = np.asarray(held[np.sort(np.random.default_rng(seed).choice(len(held), min(n, len(held)), False))])
    queries = faces if reals is None else np.concatenate([faces, reals])
    index, squared = nearest_neighbours(queries, train_images, k)
    rms = np.sqrt(squared / faces[0].size)  # root mean square difference per pixel channel, 0..255
    rows = []
    for i, face in enumerate(faces):
        tiles = [draw_text(resize(train_images[j], scale).copy(), f"{r:.0f}", 3, round(size * scale) - 5)
                 for j, r in zip(index[i], rms[i])]
        first = draw_text(resize(face, scale).copy(), f"#{i}", 3, 14)
        rows.append(stack([first, white(first.shape[0], 10), np.concatenate(tiles, axis=1)], axis=1))
    figure = np.concatenate([np.pad(r, [(2, 2), (2, 2), (0, 0)], constant_values=255) for r in rows])
    figure = caption(figure, f"left: generated (seed {seed}); right: the {k} nearest of {len(train_images):,} "
                             "training images, rms pixel distance (0-255) on each", height=20)
    path = os.path.join(out_folder(run, out), f"neighbours_seed{seed}.png")
    data_io.save_png(path, figure)
    line = f"nearest training image, rms pixel distance: generated median {np.median(rms[:n, 0]):.1f} " \
           f"(min {rms[:n, 0].min():.1f})"
    if reals is not None:
        line += f"; {len(reals)} held-out real faces median {np.median(rms[n:, 0]):.1f} " \
                f"(min {rms[n:, 0].min():.1f}) for comparison"
    print(f"{n} faces and their {k} nearest training images:\n  {path}\n{line}\n(a copy is a distance near 0 "
          "and the same face in the figure; blurry faces are close to many images without copying any)")
    return path


# ----- command line ----------------------------------------------------------------------------------------

GIF_MS = cli.int_in(10, 655350)  # GIF frame times are stored in 10 ms units, at most 65535 of them

def add_command(commands, name, function, description, seed=True, scale=2.0,
                scale_help="enlarge the pictures by this factor"):
    """A subcommand's parser with the flags every subcommand takes (RUN_DIR, --out, --seed, --scale)."""
    p = commands.add_parser(name, description=description, formatter_class=cli.HelpFormatter,
                            usage=f"python generate.py {name} RUN_DIR [options]")
    p.set_defaults(function=function)
    p.add_argument("run", metavar="RUN_DIR", help="run directory made by train.py")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/generated/)")
    if seed:
        p.add_argument("--seed", type=cli.seed, default=0, metavar="N",
                       help="seed of the noise z ~ N(0, I): the same seed, the same faces")
    p.add_argument("--scale", type=cli.float_in(0.1, 16), default=scale, metavar="X", help=scale_help)
    return p


def build_parser():
    parser = argparse.ArgumentParser(usage="python generate.py COMMAND RUN_DIR [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    # the description lists the commands, one example each
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    command = functools.partial(add_command, commands)

    p = command("sample", sample, "Generate faces: a grid PNG, one PNG per face, and samples.npy (uint8 "
                "(N, S, S, 3), for evaluate.py NAME:PATH).", scale=None,
                scale_help="enlarge the grid by this factor (default 2; not the single PNGs)")
    p.add_argument("--n", type=cli.positive_int, default=64, help="how many faces")
    p.add_argument("--format", choices=("png", "npy", "grid", "all"), default="all",
                   help="a PNG per face, samples.npy, samples_grid.png, or all three")
    p.add_argument("--columns", type=cli.positive_int, default=None, metavar="N",
                   help="faces per row of the grid (default 8)")

    p = command("interpolate", interpolate, "Walk between pairs of random z along great circles (slerp): a PNG "
                "with one walk per row and a GIF with one frame per step.")
    p.add_argument("--rows", type=cli.positive_int, default=8, metavar="N", help="how many walks")
    p.add_argument("--steps", type=cli.int_in(2), default=10, metavar="N",
                   help="faces per walk, both ends included (>= 2)")
    p.add_argument("--linear", action="store_true", help="straight lines instead of slerp, to compare")
    p.add_argument("--duration", type=GIF_MS, default=120, metavar="MS", help="milliseconds per GIF frame")
    p.add_argument("--no-bounce", dest="bounce", action="store_false",
                   help="play the GIF one way and jump back, not forth and back")

    p = command("progress", progress, "Animate training: one GIF frame per samples/epoch_*.png, labelled with "
                "its epoch.", seed=False, scale=0.5,
                scale_help="resize the epoch grids (saved 2x: 0.5 is their native size)")
    p.add_argument("--duration", type=GIF_MS, default=400, metavar="MS", help="milliseconds per frame")
    p.add_argument("--hold", type=GIF_MS, default=2000, metavar="MS", help="milliseconds on the last epoch")

    p = command("arithmetic", arithmetic, "Face arithmetic as in fig. 7 of the DCGAN paper. First --pick-sheet "
                "draws a numbered sheet of faces (and saves their z); then --a/--b/--c with face numbers from it "
                "render mean(z_a) - mean(z_b) + mean(z_c).")
    p.add_argument("--pick-sheet", action="store_true",
                   help="step 1: a sheet of numbered faces (PNG) and their z (.npz)")
    p.add_argument("--a", metavar="I,J,K", help="step 2: sheet numbers of the first concept, e.g. 3,17,42")
    p.add_argument("--b", metavar="I,J,K", help="sheet numbers of the concept to subtract, e.g. 5,8,11")
    p.add_argument("--c", metavar="I,J,K", help="sheet numbers of the concept to add, e.g. 1,2,9")
    p.add_argument("--names", default=None, metavar="A,B,C",
                   help="labels of the three concepts in the figure (default A,B,C)")
    p.add_argument("--sheet-size", type=cli.positive_int, default=None, metavar="N",
                   help="faces on the sheet (default 100)")
    p.add_argument("--z-file", default=None, metavar="PATH",
                   help="z to index instead of the sheet's: .npy (N, latent_dim) or .npz with 'z'")
    p.add_argument("--noise", type=cli.float_in(0), default=None, metavar="X",
                   help="uniform noise +-X on the result z for the 8 variations (default 0.43)")

    p = command("neighbours", neighbours, "Memorisation check: each generated face beside its k nearest "
                "training images (L2 distance in pixels).")
    p.add_argument("--n", type=cli.positive_int, default=8, help="how many faces")
    p.add_argument("--k", type=cli.positive_int, default=5, help="neighbours per face")
    p.add_argument("--data", default=None, metavar="NPY",
                   help="training images, uint8 .npy (default the run's config.json 'data')")
    return parser


@cli.main_wrapper
def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    function = args.pop("function")
    command = args.pop("command")
    run_state.load_config(args["run"])
    out = cli.check_output_folder(args["out"] or os.path.join(args["run"], "generated"))  # before generating
    with run_lock.hold_if_inside(args["run"], out, f"generate.py {command}"):
        function(**args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
