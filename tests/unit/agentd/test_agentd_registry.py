"""User handler modules (--handlers): the decorator, loading, and clear errors for mistakes."""

from __future__ import annotations

import textwrap
import zlib
from pathlib import Path

import pytest

import agentd
from agentd.agent import load_handlers
from agentd.registry import HandlerContext, HandlerLoadError


def write_module(directory: Path, name: str, source: str) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_decorated_functions_become_handlers_next_to_the_builtins(modules: Path) -> None:
    name = write_module(
        modules,
        "agentd_user_tasks_ok",
        """
        import agentd

        @agentd.handler("double")
        def double(payload):
            return payload["n"] * 2

        @agentd.handler("greet")
        def greet(payload, ctx):
            ctx.raise_if_cancelled()
            return f"hello {payload} from {ctx.work_unit_id}"

        def helper():  # undecorated: not a handler
            return None
        """,
    )
    handlers = load_handlers((name,))

    assert {"echo", "sleep_ms", "sha256", "burn_ms", "double", "greet"} == set(handlers)
    context = HandlerContext(work_unit_id="u-1", attempt=1, input_json='"bob"')
    assert handlers["double"]({"n": 21}, context) == 42
    assert handlers["greet"]("bob", context) == "hello bob from u-1"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise ImportError('missing dependency')", "cannot import handler module"),
        ("x = 1", "defines no handlers"),
        ("import agentd\n@agentd.handler('echo')\ndef mine(payload):\n    return 1", "clashes with a built-in"),
        ("import agentd\n@agentd.handler('a')\nasync def mine(payload):\n    return 1", "is async"),
        ("import agentd\n@agentd.handler('a')\ndef mine(a, b, c):\n    return 1", r"must accept \(payload\)"),
    ],
    ids=["an import error", "no handlers", "a built-in name", "an async handler", "a wrong signature"],
)
def test_a_bad_module_is_refused_at_load_with_a_clear_error(modules: Path, source: str, message: str) -> None:
    name = write_module(modules, f"agentd_user_bad_{zlib.crc32(source.encode())}", source)
    with pytest.raises(HandlerLoadError, match=message) as error:
        load_handlers((name,))
    assert name in str(error.value)


def test_a_module_that_does_not_exist_is_named_in_the_error() -> None:
    with pytest.raises(HandlerLoadError, match="cannot import handler module 'no_such_module_here'"):
        load_handlers(("no_such_module_here",))


def test_the_same_name_in_two_modules_is_refused(modules: Path) -> None:
    source = "import agentd\n@agentd.handler('twice')\ndef f(payload):\n    return 1\n"
    first = write_module(modules, "agentd_user_twice_a", source)
    second = write_module(modules, "agentd_user_twice_b", source)
    with pytest.raises(HandlerLoadError, match="already defined by module 'agentd_user_twice_a'"):
        load_handlers((first, second))


def test_the_decorator_needs_a_name() -> None:
    with pytest.raises(TypeError, match="with a name"):
        agentd.handler(lambda payload: payload)  # type: ignore[arg-type]
    with pytest.raises(HandlerLoadError, match="invalid"):
        agentd.handler("has space")
