"""Every ``headcount ...`` command shown in README.md and docs/*.md parses
against the real command line, so a doc naming a command or option that does
not exist (or no longer exists) fails here."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from headcount.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```+\s*([A-Za-z0-9_-]*)")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}

# Placeholders a doc may use in a command, and what stands in for them.
PLACEHOLDERS = {
    "party": "education",
    "department": "education",
    "name": "education",
    "analyst": "commissioner",
    "port": "9100",
    "host": "127.0.0.1",
    "project": "childrens-commissioner-2026",
    "project_id": "childrens-commissioner-2026",
}


@dataclass(frozen=True, slots=True)
class DocCommand:
    source: str  # file:line
    args: tuple[str, ...]  # after "headcount"

    def __str__(self) -> str:
        return f"{self.source}: headcount {shlex.join(self.args)}"


def _shell_lines(text: str, language: str) -> list[tuple[int, str]]:
    """(line number, logical line) of a fenced block, continuations joined."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in text:
        line = raw.rstrip()
        if language == "console":
            if not pending:
                if not line.lstrip().startswith("$ "):
                    continue  # output, not a command
                line = line.lstrip()[2:]
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


PLACEHOLDER = re.compile(r"<([A-Za-z_-]+)>|\{([A-Za-z_-]+)\}")


def _substitute(token: str) -> str:
    def one(match: re.Match[str]) -> str:
        key = (match.group(1) or match.group(2)).lower().replace("-", "_")
        return PLACEHOLDERS.get(key, key)

    return PLACEHOLDER.sub(one, token)


def _commands_in_line(source: str, line: str) -> list[DocCommand]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    found: list[DocCommand] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token in SEPARATORS:
            for i, t in enumerate(segment):
                if t.rsplit("/", 1)[-1] == "headcount":
                    found.append(
                        DocCommand(source, tuple(_substitute(a) for a in segment[i + 1 :]))
                    )
                    break
            segment = []
        else:
            segment.append(token)
    return found


def doc_commands() -> list[DocCommand]:
    out: list[DocCommand] = []
    for path in DOCS:
        block: list[tuple[int, str]] | None = None
        language = ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fence = FENCE.match(line)
            if fence and block is None:
                language, block = fence.group(1).lower(), []
            elif fence and block is not None:
                if language in SHELL_LANGUAGES:
                    for start, logical in _shell_lines(block, language):
                        source = f"{path.relative_to(ROOT)}:{start}"
                        out.extend(_commands_in_line(source, logical))
                block = None
            elif block is not None:
                block.append((number, line))
    return out


def parse_command(args: list[str]) -> click.Context:
    """Resolve the subcommand chain and parse every level's options, as the CLI
    would, without running anything. Raises click.UsageError (and subclasses)
    for an unknown command, unknown option or bad value."""
    ctx = cli.make_context("headcount", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        # Click keeps the subcommand and its arguments here until invoke().
        protected = getattr(ctx, "_protected_args", None)
        if protected is None:
            protected = ctx.protected_args
        rest = [*protected, *ctx.args]
        if not rest:
            return ctx  # a bare group shows its help
        name, sub, sub_args = command.resolve_command(ctx, rest)
        assert name is not None and sub is not None
        ctx = sub.make_context(name, sub_args, parent=ctx)
        command = sub
    return ctx


def _parses(args: tuple[str, ...]) -> None:
    try:
        parse_command(list(args))
    except click.exceptions.Exit as exc:  # --help, --version
        assert exc.exit_code == 0


COMMANDS = doc_commands()


def test_the_docs_show_commands_at_all() -> None:
    sources = {c.source.split(":")[0] for c in COMMANDS}
    assert "README.md" in sources
    assert "docs/operator-guide.md" in sources
    assert len(COMMANDS) >= 20


@pytest.fixture
def docs_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory where docs/ is the repository's and any other file a
    command names exists (empty), so only real mistakes fail."""
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_doc_command_parses_against_the_cli(command: DocCommand, docs_cwd: Path) -> None:
    for arg in command.args:
        if re.fullmatch(r"[\w./-]+\.(csv|toml|yaml|yml|sqlite|json)", arg) and not arg.startswith(
            ("docs/", "/")
        ):
            path = docs_cwd / arg
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    try:
        _parses(command.args)
    except click.UsageError as exc:
        pytest.fail(f"{command}\n  {exc.format_message()}")


@pytest.mark.parametrize(
    "args",
    [
        ["node", "serve", "--partyy", "education"],
        ["nodes", "serve"],
        ["coordinator", "serve", "--metrics-port", "not-a-port"],
        ["query", "--analyst"],
    ],
)
def test_the_check_catches_wrong_commands(args: list[str]) -> None:
    with pytest.raises(click.UsageError):
        parse_command(args)


def test_extraction_handles_prompts_continuations_and_chains() -> None:
    block = [
        (1, "$ .venv/bin/headcount node serve --party <party> &  # start it"),
        (2, "output line headcount nothing"),
        (3, "$ export X=1 && headcount status \\"),
        (4, "    --analyst commissioner"),
    ]
    found = [
        c.args
        for n, line in _shell_lines(block, "console")
        for c in _commands_in_line(f"x:{n}", line)
    ]
    assert found == [
        ("node", "serve", "--party", "education"),
        ("status", "--analyst", "commissioner"),
    ]
