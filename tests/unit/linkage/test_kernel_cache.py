"""Where numba keeps compiled kernels when the install and the home directory
are not writable (the container image's unprivileged user): importing the
linkage kernel must work there, and never from a directory someone else owns."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from headcount.linkage._kernel import cache_dir_for, check_private

REPO = Path(__file__).resolve().parents[3]
NOBODY = 65534
IMPORT_AND_SCORE = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "import numpy as np, numba;"
    "from headcount.linkage.dice import score_pairs;"
    "a = np.zeros((4, 128), dtype=np.uint8); a[:, :8] = 255;"
    "found = score_pairs(a, a, 0.5);"
    "print(len(found), numba.config.CACHE_DIR)"
)


def test_the_cache_goes_to_temp_only_when_numba_has_nowhere_to_write(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    writable = tmp_path / "pkg"
    writable.mkdir()
    temp = tmp_path / "tmp"
    assert cache_dir_for(writable, blocked / "numba", temp, 7) is None
    assert cache_dir_for(blocked, tmp_path / "home-cache", temp, 7) is None
    assert cache_dir_for(blocked, blocked / "numba", temp, 7) == temp / "headcount-numba-7"


def test_a_cache_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    own.chmod(0o700)
    check_private(own)
    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)  # anyone could have put compiled code here
    with pytest.raises(RuntimeError, match="not private to this user"):
        check_private(planted)


def test_an_unprivileged_user_with_no_home_can_import_and_run_the_kernel() -> None:
    """As the image runs it: another uid than the install's owner, HOME
    unwritable, no NUMBA_CACHE_DIR. Run as root (as here and in CI), the child
    drops to uid 65534 with setpriv; otherwise it runs as this user."""
    command = [sys.executable, "-c", IMPORT_AND_SCORE, str(REPO)]
    dropped = os.geteuid() == 0 and shutil.which("setpriv") is not None
    if dropped:
        command = [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *command,
        ]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        tmpdir.chmod(0o1777)  # a shared temporary directory, as /tmp is
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": str(tmpdir)}
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=300, cwd="/"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        pairs, cache = done.stdout.split()
        assert int(pairs) > 0
        if dropped:  # the install is root's: the per-user directory under TMPDIR
            assert cache == str(tmpdir / f"headcount-numba-{NOBODY}")
            assert (tmpdir / f"headcount-numba-{NOBODY}").stat().st_uid == NOBODY
