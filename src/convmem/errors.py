"""The whole convmem error tree.

Every error convmem raises on purpose is a ``ConvMemError``; catching that one
class is enough to handle all of them::

    ConvMemError
    ├── ConfigurationError        a setting, URL or missing driver; raised before any I/O
    ├── InvalidInputError         bad input from the caller (also a ValueError); nothing was written
    │   ├── InvalidThreadIdError  a continuation id that is not a canonical UUID string
    │   ├── InvalidOwnerError     an owner that is not a non-empty string without NUL
    │   ├── InvalidMetadataError  metadata that is not a JSON object with string keys
    │   ├── InvalidTurnError      a turn with a bad role, a bad field type or undecodable text
    │   ├── LimitExceededError    content, metadata or a batch larger than the configured limit
    │   ├── TurnNotFoundError     a fork or rewrite point that names no turn of the thread
    │   ├── RepeatedHeaderError   a request that carries a security header more than once
    │   └── InvalidPalContextError  a value pal asked to keep that is not a pal ThreadContext
    ├── ThreadError               the thread exists (or not) in a state that refuses the call
    │   ├── ThreadNotFoundError   unknown id, deleted, or owned by someone else
    │   ├── ThreadExistsError     a new thread's id is taken already
    │   ├── ThreadExpiredError    past its ``expires_at``; start a new thread
    │   ├── ThreadFullError       at its maximum number of turns; start a new thread
    │   ├── StaleSummaryError     a compaction summary made from a version since invalidated
    │   ├── SeqTakenError         sealed turns bound to seqs another write took first
    │   └── StaleUpdateError      a metadata change made on a version another write passed
    ├── IdempotencyConflictError  a turn key reused for a different turn
    ├── DecryptionError           a stored thread that cannot be decrypted (key missing, tampered)
    ├── ProviderError             the model provider failed or answered nothing usable
    ├── ToolCallError             an MCP tool call refused, in words for the model or person
    ├── IntegrationError          a framework's call convmem could not do (also a RuntimeError)
    │   └── PalStorageError       a pal-mcp-server storage call; the message says what to do
    └── StoreError                the store failed; the message says which and why
        └── StoreUnavailableError the store could not be reached; retry later

Stores translate their driver's exceptions into these in one place each. Inside the cache,
``cache.protocol.L2Error`` (and ``L2Skipped``, ``CorruptPayload``) signal a Redis failure
to the tier above it, which degrades to the store: they never reach a caller.
"""

from __future__ import annotations


class ConvMemError(Exception):
    """Base class of every error convmem raises on purpose."""


class ConfigurationError(ConvMemError):
    """A setting, store URL or optional driver is wrong or missing."""


class InvalidInputError(ConvMemError, ValueError):
    """The caller passed something convmem cannot accept; nothing was written."""


class InvalidThreadIdError(InvalidInputError):
    """A thread id (continuation id) is not a canonical lower-case UUID string."""


class InvalidOwnerError(InvalidInputError):
    """An owner is not a non-empty string without NUL characters (or None)."""


class InvalidMetadataError(InvalidInputError):
    """Metadata is not a JSON object with string keys, or holds what no store can keep."""


class InvalidTurnError(InvalidInputError):
    """A turn is malformed: bad role, wrong field type, duplicate key, or bad text."""


class TurnNotFoundError(InvalidInputError):
    """A fork point names a turn the thread does not have (never had, or was removed)."""


class LimitExceededError(InvalidInputError):
    """Content, metadata or a batch of turns is larger than the configured limit."""


class ThreadError(ConvMemError):
    """The thread is in a state that refuses the call."""

    def __init__(self, message: str, *, thread_id: str) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class ThreadNotFoundError(ThreadError):
    """No thread with this id is visible to this owner."""

    @classmethod
    def of(cls, thread_id: str, why: str = "") -> ThreadNotFoundError:
        """The error for ``thread_id``, its message ``no thread <id>`` and ``why``."""
        return cls(f"no thread {thread_id}{why}", thread_id=thread_id)


class ThreadExistsError(ThreadError):
    """A thread with the requested id exists already."""


class ThreadExpiredError(ThreadError):
    """The thread passed its ``expires_at`` and can no longer be continued."""


class ThreadFullError(ThreadError):
    """Appending would take the thread past its maximum number of turns."""

    def __init__(self, message: str, *, thread_id: str, max_turns: int) -> None:
        super().__init__(message, thread_id=thread_id)
        self.max_turns = max_turns


class StaleSummaryError(ThreadError):
    """A compaction summary was made from a version the thread has since moved past in a
    way that invalidates it (a pop, a clear or another summary), or covers no turn."""


class SeqTakenError(ThreadError):
    """Turns sealed for seqs the thread has passed were sent to it: another write came
    first, and the thread is at ``version`` now. A sealed turn binds its seq (so that a
    turn moved to another place fails authentication), so the writer seals the turns
    again for the seqs after ``version`` and retries; ``Memory`` does, and a caller of
    ``Memory`` never sees this error."""

    def __init__(self, message: str, *, thread_id: str, version: int) -> None:
        super().__init__(message, thread_id=thread_id)
        self.version = version


class StaleUpdateError(ThreadError):
    """A change of one field of a thread's metadata (``update_thread(title=...)``) was
    made on a version another write has since passed; the thread is at ``version`` now.
    ``Memory`` reads it again and retries, a few times."""

    def __init__(self, message: str, *, thread_id: str, version: int) -> None:
        super().__init__(message, thread_id=thread_id)
        self.version = version


class RepeatedHeaderError(InvalidInputError):
    """A request carried a security-relevant header (Authorization, the session id) more
    than once."""


class InvalidPalContextError(InvalidInputError):
    """A value pal-mcp-server asked to keep is not a pal ThreadContext this storage maps."""


class ToolCallError(ConvMemError):
    """An anticipated failure of an MCP tool call, with a message that says what to do."""


class IntegrationError(ConvMemError, RuntimeError):
    """A framework integration's call could not be done; the message says why (a
    RuntimeError too, which is what the frameworks' own storage layers raise)."""


class PalStorageError(IntegrationError):
    """A pal-mcp-server storage call that could not be done; the message says why and
    what to do."""


class IdempotencyConflictError(ConvMemError):
    """A turn key was already used in this thread for a turn with other content."""


class DecryptionError(ConvMemError):
    """A thread's stored ciphertext cannot be opened: encrypted under a key that is not
    configured, altered, truncated, moved from another thread, or stored in clear while
    encryption is on. Nothing is returned for that thread; other threads are unaffected."""

    def __init__(self, message: str, *, thread_id: str) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class ProviderError(ConvMemError):
    """The model provider failed (network, quota, refusal) or returned no usable answer."""


class StoreError(ConvMemError):
    """The store failed to carry out a call."""


class StoreUnavailableError(StoreError):
    """The store could not be reached (connection refused, pool exhausted, timeout)."""
