"""Protobuf stays on the wire floor (issue #15; ../shared/LAYOUT.md): outside the
modules of the layers contract's wire layer, no module builds a protobuf
message or calls a message's own methods; roles and applications deal in
dataclasses and `headcount.wire` converts.

What is checked, by reading each module's syntax tree (nothing is imported):

* a call through a name bound to a ``*_pb2`` module (``pn.HopInput(...)``,
  ``health_pb2.HealthCheckRequest(...)``) or to a name imported from one;
* a call of a method only protobuf messages have (``HasField``,
  ``SerializeToString``, ...), whatever the receiver.

What is not: annotations naming message types (a servicer's signature must),
the ``*_pb2_grpc`` stubs, servicer bases and registration a server needs, and
reading ``DESCRIPTOR`` for a service's method names. A message handed from
`headcount.wire` and read field by field would also pass; the servicers and
clients are small enough to review for that.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("headcount", "party_node", "coordinator")
PROTOBUF_METHODS = frozenset(
    {
        "ByteSize",
        "ClearField",
        "CopyFrom",
        "FromString",
        "HasField",
        "ListFields",
        "MergeFrom",
        "ParseFromString",
        "SerializeToString",
        "WhichOneof",
    }
)


def _wire_floor() -> tuple[str, ...]:
    """The modules of the layer that holds ``headcount.wire``, as path prefixes."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in doc["tool"]["importlinter"]["contracts"]:
        for layer in contract.get("layers", []):
            modules = [m.strip() for m in layer.replace("|", ":").split(":")]
            if "headcount.wire" in modules:
                return tuple(m.replace(".", "/") for m in modules)
    raise AssertionError("no layer of the import contracts holds headcount.wire")


def _on_floor(relative: str, floor: tuple[str, ...]) -> bool:
    return any(relative == f"{m}.py" or relative.startswith(f"{m}/") for m in floor)


def _pb2_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to ``*_pb2`` modules, and names imported from one."""
    modules: set[str] = set()
    members: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            # Without ``as``, a module is reached as a.b.x_pb2.M (see ``offences``).
            for alias in node.names:
                if alias.name.endswith("_pb2") and alias.asname:
                    modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            for alias in node.names:
                bound = alias.asname or alias.name
                if alias.name.endswith("_pb2"):
                    modules.add(bound)
                elif source.endswith("_pb2"):
                    members.add(bound)
    return modules, members


def _chain(func: ast.expr) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"]; [] if the callee is not a dotted name."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return []
    return [func.id, *reversed(parts)]


def offences(source: str, filename: str) -> list[str]:
    """Each protobuf construction or message-method call in ``source``, as text."""
    tree = ast.parse(source, filename=filename)
    modules, members = _pb2_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        chain = _chain(node.func)
        through_pb2 = bool(chain) and (
            chain[0] in members
            or chain[0] in modules
            or any(part.endswith("_pb2") for part in chain[:-1])
        )
        method = isinstance(node.func, ast.Attribute) and node.func.attr in PROTOBUF_METHODS
        if through_pb2 or method:
            found.append(f"{filename}:{node.lineno} {ast.unparse(node.func)}(...)")
    return found


def test_the_check_sees_what_it_forbids() -> None:
    source = """
from headcount.wire import party_node_pb2 as pn
from headcount.wire import coordinator_pb2
from headcount.wire.coordinator_pb2 import StatusRequest
import headcount.wire.common_pb2
def f(m):
    pn.HopInput(header=pn.HopHeader())
    coordinator_pb2.ProjectList()
    StatusRequest()
    headcount.wire.common_pb2.Predicate()
    m.HasField("x")
    return coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name
"""
    found = offences(source, "example.py")
    assert len(found) == 6, found


def test_no_protobuf_is_built_or_read_outside_the_wire_floor() -> None:
    floor = _wire_floor()
    checked, found = 0, []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if _on_floor(relative, floor):
                continue
            checked += 1
            found += offences(path.read_text(encoding="utf-8"), relative)
    assert checked > 50, "too few modules checked: is ROOT the repository?"
    assert not found, (
        "protobuf built or read outside the wire floor (convert in headcount/wire/):\n  "
        + "\n  ".join(found)
    )
