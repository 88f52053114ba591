"""The generated wire code must match proto/: regenerate it with `python proto/generate.py`."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_protos(tmp_path: pathlib.Path) -> None:
    written = load_generator().generate(tmp_path)
    assert written, "protoc produced nothing"
    committed = ROOT / "proto" / "krako" / "v1"
    fresh = {p.name: p.read_text() for p in written}
    current = {p.name: p.read_text() for p in committed.glob("*_pb2*.py*")}
    stale = sorted(name for name in fresh.keys() | current.keys() if fresh.get(name) != current.get(name))
    assert not stale, f"generated code is stale for {stale}: run `python proto/generate.py` and commit the result"
