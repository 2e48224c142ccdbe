"""Running the project as the container image does, without a container engine:
another uid, a read-only install, no writable home.

CI runs from a fresh clone under a directory only its owner may enter (``git
clone . $(mktemp -d)``), where another uid can read neither the checkout nor
its virtualenv. So an install meant for that uid is self-contained, in a
world-readable temporary directory: the project installed by pip, its runtime
dependencies hard-linked from this environment, and an interpreter that uid
can run.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
# Sources the wheel is built from (pyproject.toml's packages and readme).
PROJECT_FILES = ("pyproject.toml", "README.md", "headcount", "party_node", "coordinator")


def setpriv(uid: int) -> list[str]:
    """The prefix that runs a command as ``uid`` (and its group), with no
    supplementary groups: only root may use it."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def world_readable_dir(prefix: str) -> Path:
    """A new directory under the system's temporary directory (not pytest's
    per-user one, which other users cannot enter) that everyone may read."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


def interpreter_for(uid: int) -> Path | None:
    """An interpreter ``uid`` can run that has this one's ABI and finds its own
    standard library (a Python installed under root's home, as pyenv does, runs
    for another uid but with some other prefix's library): None if none."""
    wanted = sysconfig.get_config_var("SOABI")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))]
    for directory in ("/usr/local/bin", "/usr/bin"):
        candidates.append(Path(directory) / version)
    probe = "import sys, sysconfig; print(sys.prefix, sysconfig.get_config_var('SOABI'))"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    for candidate in dict.fromkeys(candidates):
        if not candidate.is_file():
            continue
        own = subprocess.run(
            [candidate, "-I", "-c", probe], env=env, capture_output=True, text=True, cwd="/"
        )
        other = subprocess.run(
            [*setpriv(uid), candidate, "-I", "-c", probe],
            env=env,
            capture_output=True,
            text=True,
            cwd="/",
        )
        if other.returncode == 0 and other.stdout == own.stdout:
            if other.stdout.split()[1] == wanted:
                return candidate
    return None


def runtime_distributions(name: str = "headcount") -> list[metadata.Distribution]:
    """Every distribution ``name`` needs at run time (its requirements without
    extras, recursively), ``name`` itself excluded."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [d for k, d in seen.items() if k != name]


@dataclass(frozen=True)
class Install:
    root: Path  # world-readable, everything below it read-only
    site: Path  # what PYTHONPATH points at: the project and its dependencies
    headcount: Path  # the console script, its shebang the interpreter below
    python: Path
    linked_files: int  # dependency files hard-linked (their modes are the environment's)


def read_only_install(root: Path, python: Path) -> Install:
    """Install the project (pip, from a copy of its sources, as a wheel would)
    and its runtime dependencies into ``root``/site, point the console script
    at ``python``, then take write permission from everything the install owns:
    every directory, and every file not hard-linked from this environment (to
    chmod those would change the environment's own files; they belong to its
    owner and another uid cannot write them anyway)."""
    src = root / "src"
    src.mkdir(parents=True)
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    shutil.rmtree(src)
    linked = 0
    for dist in runtime_distributions():
        for entry in dist.files or []:
            if ".." in entry.parts:
                continue  # scripts and data outside site-packages
            origin = Path(str(dist.locate_file(entry)))
            if not origin.is_file():
                continue
            target = site / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                continue
            try:
                os.link(origin, target)
                linked += 1
            except OSError:  # another filesystem: copy
                shutil.copy2(origin, target)
    script = site / "bin" / "headcount"
    lines = script.read_text(encoding="utf-8").splitlines(keepends=True)
    script.write_text(f"#!{python}\n" + "".join(lines[1:]), encoding="utf-8")
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            info = path.lstat()
            if info.st_nlink == 1:
                path.chmod(info.st_mode & ~0o222)
        Path(directory).chmod(0o555)
    return Install(root=root, site=site, headcount=script, python=python, linked_files=linked)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of everything under ``root``, to show nothing changed."""
    out = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        out[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return out


def make_writable_again(root: Path) -> None:
    """Give the owner back write permission on directories, so the tree can be removed."""
    for directory, _, _ in os.walk(root):
        Path(directory).chmod(0o755)
