"""Where numba keeps compiled kernels when the install and the home directory
are not writable (the container image's unprivileged user): importing the
linkage kernel must work there, and never from a directory someone else owns."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from unprivileged import NOBODY, REPO, can_switch_user, setpriv

from headcount.linkage._kernel import cache_dir_for, check_private

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


# For a checkout other users cannot read (a clone under a 0700 temporary
# directory): the child runs as this user, with writing denied where the
# install and the home are, as os.access reports it to the kernel's check.
DENY_WRITES = """
import os
_access = os.access
_denied = tuple(os.environ["HC_DENY_WRITE"].split(os.pathsep))
def access(path, mode, *args, **kwargs):
    if mode & os.W_OK and os.path.realpath(path).startswith(_denied):
        return False
    return _access(path, mode, *args, **kwargs)
os.access = access
"""


def _other_uid_can_run_the_install() -> bool:
    """Whether uid 65534 can run this interpreter and import the project
    (not when the checkout sits under a directory only its owner may enter)."""
    if not can_switch_user():
        return False
    probe = subprocess.run(
        [*setpriv(NOBODY), sys.executable, "-c", IMPORT_ONLY, str(REPO)],
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        timeout=120,
        cwd="/",
    )
    return probe.returncode == 0


IMPORT_ONLY = "import sys; sys.path.insert(0, sys.argv[1]); import numpy, numba, headcount"


def test_an_unprivileged_user_with_no_home_can_import_and_run_the_kernel(
    tmp_path: Path,
) -> None:
    """As the image runs it: the install and HOME not writable, no
    NUMBA_CACHE_DIR. As root, when uid 65534 can read the checkout, the child
    drops to that uid (as here and in the image); otherwise it runs as this
    user with writes under the install and HOME reported denied. Either way
    the kernel imports, runs, and keeps its cache in a private per-user
    directory under TMPDIR."""
    command = [sys.executable, "-c", IMPORT_AND_SCORE, str(REPO)]
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    if _other_uid_can_run_the_install():
        uid = NOBODY
        command = [*setpriv(NOBODY), *command]
        env["HOME"] = "/nonexistent"
    else:
        uid = os.getuid()
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(DENY_WRITES, encoding="utf-8")
        env["PYTHONPATH"] = str(shim)
        env["HC_DENY_WRITE"] = os.pathsep.join(
            [os.path.realpath(REPO / "headcount"), os.path.realpath(home)]
        )
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        tmpdir.chmod(0o1777)  # a shared temporary directory, as /tmp is
        env["TMPDIR"] = str(tmpdir)
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=300, cwd="/"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        pairs, cache = done.stdout.split()
        assert int(pairs) > 0
        private = tmpdir / f"headcount-numba-{uid}"
        assert cache == str(private)
        assert private.stat().st_uid == uid and private.stat().st_mode & 0o077 == 0
