"""Capacity: the logical autoscaling controller, admission control and scale actuators (issue 6)."""

from krakod.capacity.actuator import (
    Actuator,
    ActuatorError,
    CommandHookActuator,
    CommandHookOptions,
    HookResult,
    LocalProcessActuator,
    LocalProcessOptions,
    NullActuator,
)
from krakod.capacity.admission import PRIORITIES, AdmissionDecision, AdmissionMode, admit, most_restrictive
from krakod.capacity.config import CapacityConfig, MetricsSample, WindowMetrics
from krakod.capacity.controller import CapacityController, WindowRecord
from krakod.capacity.simulate import PROFILES, SimulatedPressure
from krakod.capacity.state import (
    CAPACITY_EVENT_TYPES,
    MODE_CHANGED,
    SCALE_REQUESTED,
    CapacityState,
    CapacityView,
    fold,
    restore,
)

__all__ = [
    "CAPACITY_EVENT_TYPES",
    "MODE_CHANGED",
    "PRIORITIES",
    "PROFILES",
    "SCALE_REQUESTED",
    "Actuator",
    "ActuatorError",
    "AdmissionDecision",
    "AdmissionMode",
    "CapacityConfig",
    "CapacityController",
    "CapacityState",
    "CapacityView",
    "CommandHookActuator",
    "CommandHookOptions",
    "HookResult",
    "LocalProcessActuator",
    "LocalProcessOptions",
    "MetricsSample",
    "NullActuator",
    "SimulatedPressure",
    "WindowMetrics",
    "WindowRecord",
    "admit",
    "fold",
    "most_restrictive",
    "restore",
]
