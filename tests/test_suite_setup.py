"""The suite keeps its promises on the installed pytest and pytest-xdist: the tests of one xdist_group (as
tests/test_jax_backend.py's, which share one JAX process) run on one worker under pytest.ini's --dist."""
import os
import re
import subprocess
import sys

from conftest import ROOT

GROUPED_TESTS = '''
import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    pass
'''


def test_the_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(GROUPED_TESTS)
    with open(os.path.join(ROOT, "pytest.ini")) as f:
        (tmp_path / "pytest.ini").write_text(f.read().replace("testpaths = tests", ""))
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    workers = re.findall(r"^\[(gw\d+)\] .*PASSED", result.stdout, re.MULTILINE)
    assert len(workers) == 8 and len(set(workers)) == 1, result.stdout[-2000:]
