"""Generate Python stubs from proto/ into headcount/wire/_gen.

protoc names generated imports after the proto path (``headcount.v1``), which
would collide with the real ``headcount`` package, so the imports are
rewritten to ``headcount.wire._gen.headcount.v1``. With ``--check`` nothing is
written; the script exits 1 if the committed code is stale.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "headcount" / "wire" / "_gen"
_BIN = Path(sys.executable).parent  # mypy-protobuf's plugins live beside the interpreter
_IMPORT = re.compile(r"^from headcount\.v1 import", re.MULTILINE)


def _generate(into: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={_BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={_BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out={into}",
        f"--mypy_grpc_out={into}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in into.rglob("*.py*"):
        text = _IMPORT.sub("from headcount.wire._gen.headcount.v1 import", path.read_text())
        path.write_text(text)
    for pkg in [into, *[d for d in into.rglob("*") if d.is_dir()]]:
        (pkg / "__init__.py").touch()


def _tree(path: Path) -> dict[str, Path]:
    return {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        _generate(fresh)
        if opts.check:
            new, old = _tree(fresh), _tree(OUT_DIR) if OUT_DIR.exists() else {}
            stale = sorted(
                name
                for name in new.keys() | old.keys()
                if name not in new
                or name not in old
                or not filecmp.cmp(new[name], old[name], shallow=False)
            )
            if stale:
                print("generated code is stale; run `make proto`:", *stale, sep="\n  ")  # noqa: T201
                return 1
            return 0
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
