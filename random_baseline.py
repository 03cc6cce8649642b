"""The random-image benchmark every GAN must beat: images of independent random pixels.

    python random_baseline.py                      # 2000 uniform-noise images -> outputs/random_uniform/
    python random_baseline.py --kind gaussian      # noise matched to the data's per-channel mean and std

Writes samples.npy (uint8 (N, S, S, 3), what evaluate.py reads as NAME:PATH) and grid.png.
"""
import argparse
import os
import sys

import numpy as np

from facegan import baseline, cli, data_io


@cli.main_wrapper
def main(argv=None):
    parser = argparse.ArgumentParser(usage="python random_baseline.py [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--kind", default="uniform", choices=("uniform", "gaussian"),
                        help="uniform, or Gaussian with --data's per-channel mean and std")
    parser.add_argument("--n", type=cli.positive_int, default=2000, help="number of images")
    parser.add_argument("--size", type=cli.int_in(8, 1024), default=64, metavar="N", help="image side in pixels")
    parser.add_argument("--data", default=None, metavar="NPY",
                        help="reference images for --kind gaussian (default data/celeba64_train.npy)")
    parser.add_argument("--seed", type=cli.seed, default=0, metavar="N", help="random seed")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default outputs/random_<kind>)")
    args = parser.parse_args(argv)
    if args.data and args.kind == "uniform":
        parser.error("--data is the reference of --kind gaussian; uniform pixels take none")
    args.data = args.data or os.path.join("data", "celeba64_train.npy")
    reference = None
    if args.kind == "gaussian":
        try:
            reference = data_io.load_image_array(args.data, args.size, limit=5000)  # the statistics' sample
        except data_io.DataError as error:
            raise data_io.DataError(f"{error} (prepare data with preprocess.py or pass --data)") from None
        if len(reference) == 0:
            raise data_io.DataError(f"{args.data} holds no images to take the mean and std of")
    out = args.out or os.path.join("outputs", f"random_{args.kind}")
    cli.check_output_folder(out)
    shape = (args.n, args.size, args.size, 3)
    data_io.check_free_space(out, int(np.prod(shape)), f"{args.n:,} images of {args.size} px",
                             "ask for fewer or smaller images, or give another --out")
    # the grid: 64 images enlarged 2x, fewer and at their size for large images (it is made in memory)
    grid_count, grid_scale = (64, 2) if args.size <= 128 else (64, 1) if args.size <= 512 else (16, 1)
    first = []

    def write(tmp):  # streamed: memory stays one chunk's whatever --n and --size ask for
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for chunk in baseline.random_image_chunks(args.n, args.size, args.kind, reference, args.seed):
                if sum(map(len, first)) < grid_count:  # a copy: a view would keep the whole chunk
                    first.append(chunk[:grid_count - sum(map(len, first))].copy())
                f.write(chunk.tobytes())
    data_io.atomic_write(os.path.join(out, "samples.npy"), write, suffix=".npy")
    data_io.save_grid(os.path.join(out, "grid.png"), np.concatenate(first), columns=8 if grid_count == 64 else 4,
                      scale=grid_scale)
    print(f"wrote {out}/samples.npy ({args.n} images) and {out}/grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
