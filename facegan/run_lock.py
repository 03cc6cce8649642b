"""One process at a time per run directory: train.py, and export.py / evaluate.py / generate.py when they write
into a run, hold RUN/.lock while they work; a second process is refused in one line.

    with run_lock.hold(run_dir, "train.py"):
        ...

The lock is an flock(2) on RUN/.lock: the operating system releases it when the process ends, however it ends
(kill -9 included), so a crash never leaves a run locked. The file also names the holder (pid and command) for
the refusal's message; its presence alone means nothing.
"""
import contextlib
import errno
import fcntl
import os
import sys

from facegan import cli

LOCK_NAME = ".lock"


class RunInUse(cli.UserError):
    """Another process holds the run directory's lock."""


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 400).decode(errors="replace").strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def hold(run_dir, command=None):
    """Hold run_dir's lock for the body of the with-statement (the folder must exist). Raises RunInUse when
    another process holds it, naming that process. The lock file is removed on release while still locked; a
    process that opened it meanwhile sees that its file is no longer RUN/.lock and opens the new one."""
    command = command or os.path.basename(sys.argv[0]) or "python"
    path = os.path.join(run_dir, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunInUse(f"{run_dir} is in use by {holder}: one process at a time works on a run directory; "
                           "wait for it to end (or stop it) and try again") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file on release: lock the one in its place
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} ({command})\n".encode())
        except OSError:
            pass  # a full disk: the lock holds all the same, only the holder goes unnamed
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass  # the run directory itself was removed (a new run that failed): nothing to tidy
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def hold_if_inside(run_dir, out, command=None):
    """hold(run_dir) when the output folder `out` is run_dir or inside it (the command writes into the run);
    otherwise nothing: it only reads the run."""
    run, target = os.path.realpath(run_dir), os.path.realpath(out)
    if target == run or target.startswith(run + os.sep):
        with hold(run_dir, command):
            yield
    else:
        yield
