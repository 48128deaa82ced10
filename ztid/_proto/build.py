"""Regenerate ztid/_proto/ from proto/*.proto with grpc_tools.protoc: ``python -m ztid._proto.build [--check]``.

Two mechanical fixes are applied to protoc's output, nothing else:

* imports between generated modules become package-relative (``from . import workload_pb2``);
* the messages are registered in a private descriptor pool, not the process-wide default one.
  The Workload API has no protobuf package, so its message names (``X509SVIDRequest``...) are
  global; the ``spiffe`` package registers the same names in the default pool, and protobuf
  refuses a second registration. A private pool lets both live in one process. The wire format
  (service ``SpiffeWorkloadAPI``, field numbers) is unaffected.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parent.parent / "proto"
PROTOS = ("workload.proto", "keyservice.proto")
# Only the Workload API (no protobuf package, global names) needs the private pool; ztid's own
# services live in a package (ztid.keyservice.v1) and use the default pool.
_PRIVATE_POOL_FILES = frozenset({"workload_pb2.py"})

_POOL_LINE = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# ztid: a private pool (see ztid/_proto/build.py): the spiffe package registers the same global names.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "_POOL.AddSerializedFile(google_dot_protobuf_dot_struct__pb2.DESCRIPTOR.serialized_pb)\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def _fix(name: str, text: str) -> str:
    stems = [p.removesuffix(".proto") for p in PROTOS]
    for stem in stems:
        text = text.replace(f"import {stem}_pb2 as", f"from . import {stem}_pb2 as")
    if name.endswith("_pb2.py"):
        if _POOL_LINE not in text:
            raise SystemExit(f"build: protoc output for {name} changed shape; update ztid/_proto/build.py")
        if name in _PRIVATE_POOL_FILES:
            text = text.replace(_POOL_LINE, _PRIVATE_POOL)
        stem = name.removesuffix(".py")
        text = text.replace(f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{stem}',",
                            f"BuildTopDescriptorsAndMessages(DESCRIPTOR, 'ztid._proto.{stem}',")
    return text


def generate() -> dict[str, str]:
    """Run protoc on proto/ and return {file name: fixed text} for every generated file."""
    from grpc_tools import protoc  # only needed to regenerate (test extra)

    with tempfile.TemporaryDirectory() as out:
        include = str(Path(protoc.__file__).parent / "_proto")
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
                f"--grpc_python_out={out}", *(str(PROTO_DIR / p) for p in PROTOS)]
        if protoc.main(args) != 0:
            raise SystemExit("build: protoc failed")
        return {p.name: _fix(p.name, p.read_text()) for p in sorted(Path(out).iterdir()) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ztid._proto.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in code differs")
    args = parser.parse_args(argv)
    files = generate()
    stale = [n for n, t in files.items() if not (PACKAGE_DIR / n).exists() or (PACKAGE_DIR / n).read_text() != t]
    if args.check:
        for name in stale:
            print(f"stale: ztid/_proto/{name}", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (PACKAGE_DIR / name).write_text(files[name])
        print(f"wrote ztid/_proto/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
