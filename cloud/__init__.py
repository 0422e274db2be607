"""The cloud side: an OpenAI-compatible streaming backend, its errors, the local stand-in's
supervisor, and a fault-injection OpenAI-compatible server for reliability tests.

Self-contained: nothing here imports `router/`.
"""
from cloud.errors import (
    CloudBadResponseError,
    CloudError,
    CloudRateLimitError,
    CloudRejectedError,
    CloudTimeoutError,
    CloudUnavailableError,
    StandinStartError,
)
from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.openai_backend import CloudCompletion, CloudDelta, CloudStream, OpenAIBackend
from cloud.standin import StandinServer

__all__ = [
    "CloudBadResponseError",
    "CloudCompletion",
    "CloudDelta",
    "CloudError",
    "CloudRateLimitError",
    "CloudRejectedError",
    "CloudStream",
    "CloudTimeoutError",
    "CloudUnavailableError",
    "Fault",
    "FaultInjectionOpenAIServer",
    "OpenAIBackend",
    "StandinServer",
    "StandinStartError",
]
