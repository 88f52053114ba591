"""Regenerate the Python wire code from proto/krako/v1/*.proto.

Usage:  python proto/generate.py            (writes beside the .proto files)
        python proto/generate.py --out DIR  (writes elsewhere; the drift test uses this)

The generated modules form the package `krako.v1`, shared by krakod, agentd and
the Python client. Never edit them by hand.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

PROTO_ROOT = pathlib.Path(__file__).resolve().parent


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc (from grpcio-tools) and return the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc

    include = pathlib.Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "krako" / "v1").glob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for pkg in (out_dir / "krako", out_dir / "krako" / "v1"):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated wire code of package krako.v1 (see proto/generate.py)."""\n')
    return sorted((out_dir / "krako" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=PROTO_ROOT)
    args = parser.parse_args()
    written = generate(args.out)
    print(f"generated {len(written)} files under {args.out / 'krako' / 'v1'}", file=sys.stderr)


if __name__ == "__main__":
    main()
