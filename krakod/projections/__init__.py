"""Projections: pure folds of the log into billing, wallets, session rollups and node trust.

krakod holds one `ProjectionService`; see service.py for the lifecycle and the
questions it answers, runner.py for the exactly-once contract.
"""

from krakod.projections.checker import Finding
from krakod.projections.commands import credit_event, pricing_event_for
from krakod.projections.pricing import DEFAULT_PRICING, Pricing, pricing_from_env
from krakod.projections.replay import ProjectionDigest, ReplayReport
from krakod.projections.runner import PROJECTIONS_FILE_NAME, ProjectionError, ProjectionRunner
from krakod.projections.service import CheckReport, ProjectionService, SessionRollup, WalletView
from krakod.projections.trust import NodeTrust, TrustParams
from krakod.projections.trust_publisher import PublishPolicy, trust_events

__all__ = [
    "DEFAULT_PRICING",
    "PROJECTIONS_FILE_NAME",
    "CheckReport",
    "Finding",
    "NodeTrust",
    "Pricing",
    "ProjectionDigest",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionService",
    "PublishPolicy",
    "ReplayReport",
    "SessionRollup",
    "TrustParams",
    "WalletView",
    "credit_event",
    "pricing_event_for",
    "pricing_from_env",
    "trust_events",
]
