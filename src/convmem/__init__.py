"""convmem: conversation memory for MCP servers and LLM tool servers."""

from convmem.errors import (
    ConfigurationError,
    ConvMemError,
    IdempotencyConflictError,
    InvalidInputError,
    InvalidThreadIdError,
    InvalidTurnError,
    LimitExceededError,
    StoreError,
    StoreUnavailableError,
    ThreadError,
    ThreadExpiredError,
    ThreadFullError,
    ThreadNotFoundError,
)
from convmem.memory import Memory
from convmem.models import Thread, ThreadPage, ThreadSummary, Turn
from convmem.settings import Settings

__all__ = [
    "ConfigurationError",
    "ConvMemError",
    "IdempotencyConflictError",
    "InvalidInputError",
    "InvalidThreadIdError",
    "InvalidTurnError",
    "LimitExceededError",
    "Memory",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "Thread",
    "ThreadError",
    "ThreadExpiredError",
    "ThreadFullError",
    "ThreadNotFoundError",
    "ThreadPage",
    "ThreadSummary",
    "Turn",
]
