"""What every script's command line shares: one-line errors with exit codes, numeric flags checked when they
are parsed, and output locations checked before any work starts.

    @cli.main_wrapper
    def main(argv=None):
        parser.add_argument("--n", type=cli.positive_int)
        ...
        cli.check_output_folder(out)
"""
import argparse
import contextlib
import errno
import functools
import importlib.abc
import importlib.machinery
import math
import os
import sys
import tempfile

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
VERBOSE_ENV = "FACEGAN_VERBOSE"  # =1: TensorFlow's and XLA's own C++ log lines are shown


class UserError(Exception):
    """A mistake the user can fix (a bad path, flag or file): reported as one line, exit code 2."""


def describe_os_error(error):
    """An OSError as one line that names its cause and the file involved."""
    where = f"{error.filename}: " if getattr(error, "filename", None) else ""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        return f"disk full: {where}{reason}"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied: {where}{reason}"
    if error.errno == errno.ENOENT:
        return f"no such file or folder: {where}{reason}"
    return f"{where}{reason}"


def main_wrapper(main):
    """Decorate a script's main(argv) so that it starts quietly (quiet_start) and expected failures end it with
    one line on stderr and no traceback: UserError (and data_io.DataError) and OSError exit 2, MemoryError exits
    2 with a hint, Ctrl-C exits 130. argparse's own errors already exit 2 with a usage line."""
    @functools.wraps(main)
    def wrapped(argv=None):
        prog = (main.__module__ if main.__module__ != "__main__" else os.path.basename(sys.argv[0])[:-3]) + ".py"
        quiet_start()
        try:
            return main(argv)
        except UserError as error:
            message = str(error)
        except OSError as error:
            message = describe_os_error(error)
        except MemoryError:
            message = "out of memory: ask for fewer or smaller images"
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return wrapped


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help as every command prints it: the description as written, then one line per flag (help from
    column 32 of 116) ending in its default; docs/flags.md has the long explanations.
    ArgumentParser(formatter_class=cli.HelpFormatter)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=116)

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default in ("", argparse.SUPPRESS) or not action.option_strings or action.nargs == 0):
            return text
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default {shown.replace('%', '%%')})"


# ----- a quiet start -----------------------------------------------------------------------------------------

def quiet_start():
    """Keep TensorFlow's and XLA's own C++ log lines off the terminal (on a machine without a GPU they include
    `E0000 ... failed call to cuInit`, which reads like a failure; the rest are notes on oneDNN, CPU features
    and CUDA probing), unless FACEGAN_VERBOSE=1. Every command calls it before TensorFlow loads. The project's
    own warnings and errors, and Python's, print as always.

    Two parts: TF_CPP_MIN_LOG_LEVEL=3 for what TensorFlow logs once it is loaded (a value already set in the
    environment is kept), and, while `tensorflow` itself is imported, the process's stderr sent to /dev/null:
    its libraries log as they load, before any setting can apply."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` where Python would, and imports it with stderr sent to /dev/null."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def load_quietly(module):
                with _stderr_to_devnull():
                    load(module)
            spec.loader.exec_module = load_quietly
        return spec


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 (what C++ libraries write to, and Python's sys.stderr) to /dev/null, then back."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ----- numbers for argparse: type=cli.positive_int etc. -------------------------------------------------------

def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_in(low, high=None):
    """An argparse type: an integer with low <= value (<= high when given)."""
    def parse(text):
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high)}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_in(low, high=None, low_inclusive=True, high_inclusive=True):
    """An argparse type: a finite float above low (or equal, when low_inclusive) and below high (or equal, when
    high_inclusive)."""
    def parse(text):
        value = _number(text, float)
        if (value < low or (value == low and not low_inclusive)
                or (high is not None and (value > high or (value == high and not high_inclusive)))):
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high, low_inclusive, high_inclusive)}, "
                                             f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


def _range_text(low, high, low_inclusive=True, high_inclusive=True):
    if high is None:
        return f"{'>=' if low_inclusive else '>'} {low}"
    if low_inclusive and high_inclusive:
        return f"between {low} and {high}"
    return f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"


positive_int = int_in(1)
non_negative_int = int_in(0)
positive_float = float_in(0, low_inclusive=False)
seed = int_in(0, 2**32 - 1)  # numpy's and Keras' seeding both take 0..2**32-1


# ----- outputs ------------------------------------------------------------------------------------------------

def check_output_folder(folder):
    """Make `folder` (and its parents) if needed and prove that a file can be created in it, before any work
    starts. Raises UserError in one line; the folders it made are removed again when the check fails."""
    folder = os.path.abspath(folder or ".")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"cannot write to {folder}: it is a file, not a folder")
    created, path = [], folder
    while not os.path.exists(path) and os.path.dirname(path) != path:
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        for path in created:  # deepest first; only the empty folders this check made
            try:
                os.rmdir(path)
            except OSError:
                break
        raise UserError(f"cannot write to {folder}: {error.strerror or error}") from None
    return folder
