"""krakod configuration: one frozen value, built from flags, environment and an optional auth file."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krakod.capacity import CapacityConfig

DEFAULT_LISTEN = "127.0.0.1:7420"
BUILTIN_CPU_HANDLERS = frozenset({"echo", "sleep_ms", "sha256", "burn_ms"})
LLM_HANDLERS = frozenset({"", "chat"})
KINDS = ("cpu", "llm_pod")


class ConfigError(ValueError):
    """A configuration krakod refuses to start with; the message says what to change."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    agent_tokens: frozenset[str] = frozenset()
    tenant_keys: dict[str, str] = field(default_factory=dict)  # API key -> tenant id
    admin_tokens: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.agent_tokens or self.tenant_keys or self.admin_tokens)


@dataclass(frozen=True, slots=True)
class Limits:
    max_input_bytes: int = 256 * 1024  # a unit's input_json
    max_batch_units: int = 1000  # units per SubmitWorkUnits call
    max_stream_batch: int = 500  # items per repeated field on the agent stream
    max_message_bytes: int = 8 * 1024 * 1024  # gRPC max message size, both directions
    agent_outbound_queue: int = 10_000  # pending items per agent connection
    max_client_key_chars: int = 200
    max_attempts_cap: int = 5
    max_read_events: int = 5000  # per ReadEvents call
    max_output_bytes: int = 1024 * 1024  # a result's output_json


@dataclass(frozen=True, slots=True)
class Timing:
    heartbeat_interval_ms: int = 1000
    lease_ms: int = 10_000  # a claim lives this long past the holder's last heartbeat
    node_ttl_ms: int = 5000  # no heartbeat for this long: node.unavailable
    dispatch_timeout_ms: int = 5000  # an offer not claimed in time goes elsewhere
    run_timeout_ms: int = 300_000
    default_max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class CapacityOptions:
    controller: CapacityConfig = field(default_factory=CapacityConfig)
    simulate_pressure: str | None = None  # none|low|high|critical|auto: a simulated metrics source (demo)
    scale_exec: str | None = None  # operator hook, receives the target R
    autoscale_local_agents: bool = False  # start/stop agentd processes on this host
    autoscale_kinds: str = "cpu"
    autoscale_concurrency: int = 4


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("krako-data")
    listen: str = DEFAULT_LISTEN
    synchronous: str = "FULL"
    auth: AuthConfig = field(default_factory=AuthConfig)
    allow_unauthenticated: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    limits: Limits = field(default_factory=Limits)
    timing: Timing = field(default_factory=Timing)
    extra_handlers: frozenset[str] = frozenset()
    multi_agent_fanout: int = 1  # offer each unit to this many eligible agents at once
    capacity: CapacityOptions = field(default_factory=CapacityOptions)
    # LLM budget limits and prices (krakod.budgets.BudgetConfig); None: defaults with prices from the environment.
    budget: Any = None
    # Placement pipeline settings (krakod.scheduler.PlacementConfig, e.g. the score weights); None: defaults.
    placement: Any = None

    def validate(self) -> None:
        """Refuse unsafe or impossible configurations with a message saying what to change."""
        host = listen_host(self.listen)
        if not self.auth.enabled and not self.allow_unauthenticated and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {self.listen} without tokens: configure --agent-token/--tenant-key/"
                "--admin-token (or an --auth-file), listen on a loopback address, or pass --allow-unauthenticated"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.multi_agent_fanout < 1 or self.multi_agent_fanout > 16:
            raise ConfigError("--multi-agent-fanout must be between 1 and 16")
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("--synchronous must be NORMAL, FULL or EXTRA")


def listen_host(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_tenant_keys(items: list[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in items:
        key, sep, tenant = item.partition("=")
        if not sep or not key or not tenant:
            raise ConfigError(f"tenant keys are KEY=TENANT, got {item!r}")
        keys[key] = tenant
    return keys


def load_auth(
    *,
    agent_tokens: list[str],
    tenant_keys: list[str],
    admin_tokens: list[str],
    auth_file: Path | None,
    environ: dict[str, str] | None = None,
) -> AuthConfig:
    """Merge tokens from flags, KRAKO_AGENT_TOKENS / KRAKO_TENANT_KEYS / KRAKO_ADMIN_TOKENS and an auth file.

    The auth file is JSON: {"agent_tokens": [...], "tenant_keys": {"KEY": "TENANT"}, "admin_tokens": [...]}.
    """
    env = os.environ if environ is None else environ
    agents = set(agent_tokens) | set(_split(env.get("KRAKO_AGENT_TOKENS")))
    admins = set(admin_tokens) | set(_split(env.get("KRAKO_ADMIN_TOKENS")))
    tenants = parse_tenant_keys(list(tenant_keys) + _split(env.get("KRAKO_TENANT_KEYS")))
    if auth_file is not None:
        try:
            doc = json.loads(Path(auth_file).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"reading auth file {auth_file}: {exc}") from exc
        agents |= set(doc.get("agent_tokens", []))
        admins |= set(doc.get("admin_tokens", []))
        tenants.update(doc.get("tenant_keys", {}))
    return AuthConfig(agent_tokens=frozenset(agents), tenant_keys=tenants, admin_tokens=frozenset(admins))
