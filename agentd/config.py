"""Agent configuration (a frozen value) and the state dir: where the node id and outbox live."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agentd.executors.llm import LlmSettings

KINDS = ("cpu", "llm_pod")
STABILITY_CLASSES = ("community", "datacenter")
NODE_ID_FILE = "node_id"
_NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("krako")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "3.0.0"


AGENT_VERSION = _version()


@dataclass(frozen=True)
class AgentConfig:
    """Everything an Agent needs; built by the CLI or directly (tests, the demo)."""

    server: str
    node_id: str
    state_dir: Path
    region: str = "local"
    kinds: tuple[str, ...] = ("cpu",)
    concurrency: int = 4
    handler_modules: tuple[str, ...] = ()
    token: str = ""
    tls_ca: Path | None = None
    stability_class: str = "community"
    llm: LlmSettings = field(default_factory=LlmSettings)
    version: str = AGENT_VERSION
    # Shutdown: how long running units may finish, then how long to wait for result acks.
    shutdown_grace_s: float = 10.0
    flush_timeout_s: float = 5.0
    # Reconnects: exponential backoff with jitter; None retries forever.
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0
    max_connect_attempts: int | None = None
    welcome_timeout_s: float = 10.0
    # A claim neither granted nor denied within this long stops holding capacity.
    claim_timeout_s: float = 30.0
    outgoing_queue_max: int = 10_000

    def __post_init__(self) -> None:
        check_node_id(self.node_id)
        if not self.kinds or any(kind not in KINDS for kind in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {', '.join(KINDS)}, got {self.kinds}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if "llm_pod" in self.kinds and self.llm.max_concurrency < 1:
            raise ValueError("llm max concurrency must be at least 1")
        if self.stability_class not in STABILITY_CLASSES:
            raise ValueError(f"stability class must be one of {', '.join(STABILITY_CLASSES)}")
        if not self.server or ":" not in self.server:
            raise ValueError(f"server must be HOST:PORT, got {self.server!r}")

    @property
    def outbox_path(self) -> Path:
        # One outbox per node id, so agents with distinct ids may share a state dir.
        return self.state_dir / f"outbox-{self.node_id}.sqlite3"


def check_node_id(node_id: str) -> str:
    if not _NODE_ID_PATTERN.match(node_id):
        raise ValueError(f"node id {node_id!r} is invalid (1-128 characters of letters, digits, _ . : -)")
    return node_id


def default_state_dir() -> Path:
    """$KRAKO_AGENT_STATE_DIR, else ~/.local/state/krako/agentd."""
    configured = os.environ.get("KRAKO_AGENT_STATE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "state" / "krako" / "agentd"


def persistent_node_id(state_dir: Path) -> str:
    """The node id stored in ``state_dir``, created once (race-free) when missing."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / NODE_ID_FILE
    if not path.exists():
        candidate = state_dir / f".{NODE_ID_FILE}.{uuid.uuid4().hex}"
        candidate.write_text(f"agent-{uuid.uuid4().hex[:12]}\n")
        try:
            # link() fails if another agent created the file first; then its id wins.
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return check_node_id(path.read_text().strip())
