"""``CompactionPolicy``: when a conversation is compacted and how much of it stays, as
shares of the history budget. Apart from ``convmem.compaction`` (the plan and the
summarisers, which need a model provider) so that ``Settings`` can take its defaults
from here without reaching up to the providers."""

from __future__ import annotations

from dataclasses import dataclass

from convmem.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When to compact and how much to keep, as shares of the history budget.

    ``trigger_share``: compact when the history no summary covers passes this share.
    ``keep_share``: the newest turns worth about this share stay as they are.
    ``summary_share``: the most a summary may take. After a compaction the history is
    at most ``keep_share + summary_share``, which must stay below ``trigger_share`` (or
    every request would compact again).
    """

    trigger_share: float = 0.75
    keep_share: float = 0.3
    summary_share: float = 0.15

    def __post_init__(self) -> None:
        for name in ("trigger_share", "keep_share", "summary_share"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 1:
                raise InvalidInputError(f"{name} must be in (0, 1], got {value!r}")
        if self.keep_share + self.summary_share >= self.trigger_share:
            raise InvalidInputError(
                f"keep_share + summary_share ({self.keep_share} + {self.summary_share}) must"
                f" be below trigger_share ({self.trigger_share}), or every request compacts"
            )
