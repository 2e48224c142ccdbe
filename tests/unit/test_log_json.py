"""``headcount --log-json``: every line a server writes is one JSON object."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from headcount import log as log_mod
from headcount.federation import InitOptions, init_federation

FIELDS = {"at", "level", "logger", "message"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_formatter_writes_one_object_per_line_with_the_exception(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    log_mod.configure("INFO", json_lines=True, name="education")
    logger = logging.getLogger("headcount.test")
    logger.info("epoch %s: %d records", "e1", 3)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logger.exception("it failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert FIELDS <= first.keys()
    assert first["level"] == "INFO"
    assert first["logger"] == "headcount.test"
    assert first["message"] == "epoch e1: 3 records"
    assert first["process"] == "education"
    assert second["level"] == "ERROR"
    assert "RuntimeError: boom" in second["exception"]


@pytest.fixture(scope="module")
def federation_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("logjson") / "fed"
    init_federation(directory, InitOptions(paillier_bits=1024, insecure_test_keys=True))
    return directory / "federation.toml"


def _serve_and_stop(args: list[str], ready: str) -> list[str]:
    """Start ``headcount --log-json ARGS``, wait for a log line containing
    ``ready``, stop it with SIGTERM and return everything it wrote to stderr."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "headcount.cli", "--log-json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                lines.append(line)
                if ready in line:
                    break
            proc.send_signal(signal.SIGTERM)
            # Read on from the same stream: its buffer may already hold later lines.
            lines += proc.stderr.read().splitlines()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, "".join(lines)
    return [line for line in lines if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "process"),
    [
        (["node", "serve", "--party", "education"], "education"),
        (["coordinator", "serve"], "coordinator"),
    ],
    ids=["node", "coordinator"],
)
def test_servers_write_only_json_lines(
    federation_file: Path, args: list[str], process: str
) -> None:
    lines = _serve_and_stop([*args, "--config", str(federation_file)], "listening")
    entries = [json.loads(line) for line in lines]  # fails on any non-JSON line
    assert len(entries) >= 2  # listening ... stopping
    for entry in entries:
        assert FIELDS <= entry.keys(), entry
        assert entry["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert entry["process"] == process
    messages = [e["message"] for e in entries]
    assert any("listening" in m for m in messages)
    assert any("stopping" in m for m in messages), messages
