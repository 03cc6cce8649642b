"""Turn CelebA (or any folder/zip of face photos) into compact uint8 arrays of square faces.

    python preprocess.py --source ~/Downloads/img_align_celeba.zip          # 50,000 train + 2,000 holdout
    python preprocess.py --source img_align_celeba/ --limit 0               # all 202,599 images

Writes <out>_train.npy and <out>_holdout.npy, uint8 (N, S, S, 3) RGB, and <out>.json describing them.
"""
import argparse
import multiprocessing
import os
import signal
import sys
import time
import zipfile

import numpy as np
from tqdm import tqdm

from facegan import cli
from facegan import data_io

_worker = {}  # per-process state: the open zip, so each worker opens it once


def _init_worker(zip_path, folder, size, crop, in_pool=False):
    if in_pool:  # Ctrl-C reaches the whole process group: the parent alone handles it and ends the pool
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.update(zip=zipfile.ZipFile(zip_path) if zip_path else None, zip_path=zip_path,
                   folder=folder, size=size, crop=crop)


def _decode_chunk(names):
    """Decode one chunk of images; returns (uint8 array, [(name, reason), ...] skipped)."""
    images, skipped = [], []
    for name in names:
        image, reason = data_io.read_image(_worker["zip_path"], _worker["folder"], name, _worker["zip"])
        if image is None:
            skipped.append((name, reason))
            continue
        if min(image.shape[:2]) < _worker["size"] // 2:  # would be upscaled more than 2x: a blur, not a face
            skipped.append((name, f"too small ({image.shape[1]}x{image.shape[0]} for {_worker['size']} px)"))
            continue
        images.append(data_io.crop_and_resize(image, _worker["size"], _worker["crop"]))
    size = _worker["size"]
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8), skipped


def decode_images(zip_path, folder, names, size, crop, workers, desc="decoding", chunk=256):
    """Decode, crop and resize `names` on `workers` processes with a progress bar, in order."""
    chunks = [names[i:i + chunk] for i in range(0, len(names), chunk)]
    arrays, skipped = [], []
    init_args = (zip_path, folder, size, crop)
    with tqdm(total=len(names), desc=desc, unit="img") as bar:
        if workers <= 1 or len(chunks) <= 1:
            _init_worker(*init_args)
            results = map(_decode_chunk, chunks)
            pool = None
        else:
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(chunks)), _init_worker,
                                                            (*init_args, True))
            results = pool.imap(_decode_chunk, chunks)
        try:
            for chunk_names, (array, chunk_skipped) in zip(chunks, results):
                arrays.append(array)
                skipped.extend(chunk_skipped)
                bar.update(len(chunk_names))
        finally:
            if pool is not None:
                pool.terminate()
    images = np.concatenate(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return images, skipped


def split_names(names, limit, holdout, partition=None):
    """Choose the training subset and the held-out images, deterministically (sorted by file name).

    With CelebA's partition file the holdout comes from its test partition (2) and training from its
    train partition (0); otherwise training is the first `limit` files and the holdout the next ones.
    """
    if partition:
        train = [n for n in names if partition.get(os.path.basename(n)) == 0]
        test = [n for n in names if partition.get(os.path.basename(n)) == 2]
        if not train:
            raise data_io.DataError("the partition file has no train-partition (0) entries for these images")
        if holdout and not test:
            raise data_io.DataError(f"the partition file has no test-partition (2) entries for these images, "
                                    f"so no holdout of {holdout}; remove it to hold out the files after the "
                                    "training subset, or pass --holdout 0")
        return (train[:limit] if limit else train), test[:holdout]
    available = len(names) - holdout
    if available < 1:
        raise data_io.DataError(f"only {len(names)} images found, not enough for a holdout of {holdout}")
    n_train = available if limit == 0 else min(limit, available)
    return names[:n_train], names[n_train:n_train + holdout]


def preprocess(source, out, limit=50000, holdout=2000, size=64, crop="center", workers=None):
    """Run the whole preprocessing; returns the metadata dict written to <out>.json."""
    start = time.time()
    if not out or out.endswith(os.sep) or os.path.isdir(out):
        raise data_io.DataError(f"--out {out!r} is a folder; --out is a file prefix such as data/celeba64"
                                if out else "--out must not be empty; it is a file prefix such as data/celeba64")
    zip_path, folder, names = data_io.find_images(source)
    partition_path = data_io.find_partition_file(source)
    partition = data_io.read_partition_file(partition_path) if partition_path else None
    train_names, holdout_names = split_names(names, limit, holdout, partition)
    cli.check_output_folder(os.path.dirname(os.path.abspath(out)))  # fail before minutes of decoding, not after
    # the arrays are held in memory while they are made, and once more while joined
    data_io.check_memory(2 * (len(train_names) + len(holdout_names)) * size * size * 3,
                         f"{len(train_names) + len(holdout_names):,} images of {size} px", "give a smaller --limit")
    workers = workers or os.cpu_count() or 1
    print(f"{len(names):,} images found in {source}; using {len(train_names):,} for training and "
          f"{len(holdout_names):,} held out ({'CelebA test partition' if partition else 'next files by name'}); "
          f"{size}x{size}, crop={crop}, {workers} workers")
    train, train_skipped = decode_images(zip_path, folder, train_names, size, crop, workers, "train")
    held, held_skipped = decode_images(zip_path, folder, holdout_names, size, crop, workers, "holdout")
    skipped = [{"file": n, "reason": r} for n, r in train_skipped + held_skipped]
    if len(train) == 0:
        raise data_io.DataError(f"none of the {len(train_names)} training images in {source} could be decoded")
    seconds = time.time() - start
    meta = {
        "source": os.path.abspath(source),
        "layout": "zip" if zip_path else "folder",
        "images_found": len(names),
        "train_count": int(len(train)),
        "holdout_count": int(len(held)),
        "holdout_from": "celeba test partition" if partition else "files after the training subset",
        "partition_file": partition_path,
        "image_size": size,
        "crop": crop,
        "resize": "cv2.INTER_AREA",
        "train_file": os.path.abspath(data_io.dataset_paths(out)["train"]),
        "holdout_file": os.path.abspath(data_io.dataset_paths(out)["holdout"]),
        "first_train_file": train_names[0], "last_train_file": train_names[-1],
        "skipped": skipped,
        "seconds": round(seconds, 2),
        "images_per_second": round((len(train_names) + len(holdout_names)) / max(seconds, 1e-9), 1),
    }
    return data_io.save_dataset(out, train, held, meta)


@cli.main_wrapper
def main(argv=None):
    parser = argparse.ArgumentParser(usage="python preprocess.py --source PATH [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--source", required=True, metavar="PATH",
                        help="img_align_celeba.zip or its folder, or any folder/zip of .jpg/.png faces")
    parser.add_argument("--out", default=None, metavar="PREFIX",
                        help="writes PREFIX_train.npy, PREFIX_holdout.npy, PREFIX.json (default data/celeba<size>)")
    parser.add_argument("--limit", type=cli.non_negative_int, default=50000, metavar="N",
                        help="training images, the first by file name (0 = all)")
    parser.add_argument("--holdout", type=cli.non_negative_int, default=2000, metavar="N",
                        help="images kept out of training for evaluation")
    parser.add_argument("--size", type=int, default=64, choices=(32, 64, 128), help="output side in pixels")
    parser.add_argument("--crop", default="center", choices=("center", "tight"),
                        help="center: full-width square; tight: central 108/178 of the width")
    parser.add_argument("--workers", type=cli.int_in(0, 256), default=0, metavar="N",
                        help="decoding processes (0 = all cores)")
    args = parser.parse_args(argv)
    out = os.path.join("data", f"celeba{args.size}") if args.out is None else args.out
    meta = preprocess(args.source, out, args.limit, args.holdout, args.size, args.crop, args.workers or None)
    print(f"wrote {meta['train_file']} ({meta['train_count']:,} images), {meta['holdout_file']} "
          f"({meta['holdout_count']:,}), {out}.json; {meta['seconds']} s, {meta['images_per_second']:,} images/s")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} file(s), e.g. {meta['skipped'][0]['file']}: "
              f"{meta['skipped'][0]['reason']} (all listed in {out}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
