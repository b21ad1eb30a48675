"""convmem: conversation memory for MCP servers and LLM tool servers."""

from convmem.errors import (
    ConfigurationError,
    ConvMemError,
    IdempotencyConflictError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidOwnerError,
    InvalidThreadIdError,
    InvalidTurnError,
    LimitExceededError,
    ProviderError,
    StaleSummaryError,
    StoreError,
    StoreUnavailableError,
    ThreadError,
    ThreadExistsError,
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
    "InvalidMetadataError",
    "InvalidOwnerError",
    "InvalidThreadIdError",
    "InvalidTurnError",
    "LimitExceededError",
    "Memory",
    "ProviderError",
    "Settings",
    "StaleSummaryError",
    "StoreError",
    "StoreUnavailableError",
    "Thread",
    "ThreadError",
    "ThreadExistsError",
    "ThreadExpiredError",
    "ThreadFullError",
    "ThreadNotFoundError",
    "ThreadPage",
    "ThreadSummary",
    "Turn",
]
