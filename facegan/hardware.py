"""What this machine's CPU offers, as /proc/cpuinfo lists it."""
import functools


def cpu_flags(cpuinfo=None):
    """The CPU's feature flags (x86 "flags", aarch64 "Features") in `cpuinfo`, /proc/cpuinfo's text; read from
    this machine when None. None where it cannot be read."""
    if cpuinfo is None:
        return _machine_cpu_flags()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


@functools.cache
def _machine_cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_flags(f.read())
    except OSError:
        return None
