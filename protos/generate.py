#!/usr/bin/env python3
"""Generate Python gRPC stubs from protos/ into services/proto/ (run by `make protos`).

protoc writes imports as `from meshllm.x.v1 import ...`; we rewrite them to live under
`services.proto` so the stubs import like any other module, without sys.path tricks.
`--check` regenerates into a temp dir and fails if the committed stubs differ.
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
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "services" / "proto"
IMPORT_RE = re.compile(r"^(from|import) meshllm\.", re.MULTILINE)


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for generated in out.rglob("*.py*"):
        text = generated.read_text()
        generated.write_text(IMPORT_RE.sub(r"\1 services.proto.meshllm.", text))
    for directory in [out, *[d for d in out.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()


def stale_files(fresh: Path, committed: Path) -> list[str]:
    fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    committed_files = {
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    differing = sorted(str(p) for p in fresh_files ^ committed_files)
    for path in fresh_files & committed_files:
        if not filecmp.cmp(fresh / path, committed / path, shallow=False):
            differing.append(str(path))
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if services/proto is stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = stale_files(Path(tmp), OUT_ROOT)
        if stale:
            print("stale proto stubs (run `make protos`): " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    shutil.rmtree(OUT_ROOT, ignore_errors=True)
    generate(OUT_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
