"""The container image's runtime conditions, without a container engine.

A party node and the coordinator run from a read-only install as the image
runs them (docker/Dockerfile): as an unprivileged uid (65534 when this test
runs as root; else this user), with the image's environment, a HOME and a
working directory they cannot write, and every writable path on a "volume"
(a temporary directory standing for /fed/state and /var/cache/headcount).
Both must start, answer the health probes the image and compose use, run the
linkage kernel (numba keeps its cache on the volume), stop cleanly on SIGTERM,
and leave the install, HOME and the working directory as they were. As root,
the register also builds its pages from the coordinator's state while it
serves, as another uid that may read that volume but not write it (compose
mounts it read-only into the register).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from unprivileged import (
    NOBODY,
    can_switch_user,
    interpreter_for,
    make_writable_again,
    read_only_install,
    setpriv,
    snapshot,
    world_readable_dir,
)

from headcount.federation import InitOptions, init_federation

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The kernel compiled and run once, so that numba writes its cache.
SCORE = (
    "import numpy as np, numba;"
    "from headcount.linkage.dice import score_pairs;"
    "a = np.zeros((4, 128), dtype=np.uint8); a[:, :8] = 255;"
    "print(len(score_pairs(a, a, 0.5)), numba.config.CACHE_DIR)"
)
# This machine runs these two services; their keys are the only ones it holds.
SERVICES = ("education", "coordinator")
# The register's uid: it reads the coordinator's state and cannot write it.
REGISTER = NOBODY - 1


def image_env() -> dict[str, str]:
    """The image's ENV (the last stage of docker/Dockerfile)."""
    text = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "FROM":
            env = {}
        elif instruction == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


@pytest.fixture
def scene() -> Iterator[dict[str, Path]]:
    """Temporary directories other users may enter (pytest's may not be)."""
    root = world_readable_dir("headcount-runtime-")
    try:
        yield {"root": root}
    finally:
        make_writable_again(root)
        shutil.rmtree(root)


def test_node_and_coordinator_run_as_the_image_runs_them(scene: dict[str, Path]) -> None:
    started = time.monotonic()
    root = scene["root"]
    python = interpreter_for(NOBODY) if can_switch_user() else None
    if python is not None:
        uid, as_user = NOBODY, setpriv(NOBODY)
    else:  # not root (or no interpreter that uid can run): this user, all the same
        uid, as_user = os.getuid(), []
        python = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    install = read_only_install(root / "install", python)

    # /fed: the federation file, certificates and this machine's own keys,
    # read-only; /fed/state and the cache: the volumes, writable by the uid.
    fed = root / "fed"
    init_federation(fed, InitOptions(paillier_bits=1024, insecure_test_keys=True))
    (fed / "ca" / "ca.key").unlink(missing_ok=True)
    for key in (fed / "keys").iterdir():
        if key.stem not in (*SERVICES, "coordinator-audit"):
            key.unlink()
    cache = root / "cache"
    home = root / "home"
    work = root / "work"
    for directory in (cache, home, work):
        directory.mkdir()
    volumes = [fed / "state", cache]
    if uid != os.getuid():
        for path in [fed, *fed.rglob("*"), cache]:
            os.chown(path, uid, uid)
    for path in [fed, *fed.rglob("*")]:
        if path not in volumes:
            path.chmod(path.stat().st_mode & ~0o222)
    for volume in volumes:
        volume.chmod(0o700)
    register = root / "register"  # its own volumes: pages and cache
    if uid != os.getuid():
        (fed / "state").chmod(0o755)  # readable by the register's uid, not writable
        for directory in (register / "site", register / "cache"):
            directory.mkdir(parents=True)
            os.chown(directory, REGISTER, REGISTER)
    home.chmod(0o555)
    work.chmod(0o555)

    places = {"/fed": str(fed), "/var/cache/headcount": str(cache), "/nonexistent": str(home)}
    env = {"PATH": f"{install.site / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(install.site)}
    for name, value in image_env().items():
        for inside, outside in places.items():
            if value == inside or value.startswith(inside + "/"):
                value = outside + value[len(inside) :]
        env[name] = value
    assert env["HOME"] == str(home) and env["NUMBA_CACHE_DIR"].startswith(str(cache))
    before = {"install": snapshot(install.root), "home": snapshot(home), "work": snapshot(work)}

    def build_register() -> subprocess.CompletedProcess[str]:
        cache = {"NUMBA_CACHE_DIR": "numba", "MPLCONFIGDIR": "matplotlib"}
        out = str(register / "site")
        return subprocess.run(
            [*setpriv(REGISTER), str(install.headcount), "register", "build", "--out", out],
            env=env | {name: str(register / "cache" / sub) for name, sub in cache.items()},
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user, str(install.headcount), *args],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    lines = [
        f"uid {uid} (as root: {os.geteuid() == 0}), interpreter {python}",
        f"read-only install {install.site} ({install.linked_files} dependency files hard-linked)",
        f"HOME {home} and cwd {work}: not writable; volumes {fed / 'state'}, {cache}",
    ]
    processes = {
        "education": [*as_user, str(install.headcount), "node", "serve", "--party", "education"],
        "coordinator": [*as_user, str(install.headcount), "coordinator", "serve"],
    }
    running = {
        name: subprocess.Popen(
            argv, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, argv in processes.items()
    }
    try:
        probes = {
            "headcount health (the image's HEALTHCHECK)": ["health", "--timeout", "60"],
            "headcount node health --party education": ["node", "health", "--party", "education"],
            "headcount coordinator health": ["coordinator", "health"],
        }
        for label, args in probes.items():
            done = run(*args)
            assert done.returncode == 0, (label, done.stdout, done.stderr)
            lines.append(f"{label}: exit 0")
            lines += [f"    {line}" for line in done.stdout.splitlines()]
        for name, process in running.items():
            assert process.poll() is None, name
        kernel = subprocess.run(
            [*as_user, str(python), "-c", SCORE],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert kernel.returncode == 0, kernel.stderr[-2000:]
        pairs, cache_dir = kernel.stdout.split()
        assert int(pairs) > 0 and cache_dir == env["NUMBA_CACHE_DIR"]
        lines.append(f"linkage kernel: {pairs} pairs scored, numba cache in {cache_dir}")
        if uid != os.getuid():
            done = build_register()
            assert done.returncode == 0, done.stderr[-2000:]
            lines.append(f"register (uid {REGISTER}, state not writable), while serving: exit 0")
            lines += [f"    {line}" for line in done.stdout.splitlines()]
    finally:
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        outputs = {name: p.communicate(timeout=30) for name, p in running.items()}
    for name, process in running.items():
        assert process.returncode == 0, (name, outputs[name][1][-2000:])
        assert "Traceback" not in outputs[name][1], outputs[name][1][-2000:]
        lines.append(f"{name}: stopped on SIGTERM, exit {process.returncode}")
    if uid != os.getuid():
        # With the coordinator stopped, its -wal and -shm are gone: the
        # register cannot open the file, and says why.
        done = build_register()
        assert done.returncode != 0 and "-wal and -shm" in done.stderr, done.stderr[-2000:]
        lines.append("register, coordinator stopped: refused, naming the -wal and -shm files")

    # Nothing was written but the volumes.
    assert snapshot(install.root) == before["install"]
    assert snapshot(home) == before["home"] and snapshot(work) == before["work"]
    written = sorted(
        str(p.relative_to(root)) for p in [*(fed / "state").iterdir(), *cache.rglob("*")]
    )
    assert {"fed/state/coordinator.sqlite", "fed/state/education.sqlite"} <= set(written)
    assert any(p.endswith(".nbi") for p in written)  # numba's index, on the cache volume
    for path in [*(fed / "state").iterdir(), *cache.rglob("*")]:
        assert path.stat().st_uid == uid
    lines.append(f"written, all owned by uid {uid}: {len(written)} files on the volumes")
    lines += [f"    {p}" for p in written if not p.endswith((".nbi", ".nbc"))]
    lines.append(
        f"unchanged: the install, HOME and cwd ({time.monotonic() - started:.1f} s in all)"
    )
    sys.stdout.write("\n" + "\n".join(lines) + "\n")
