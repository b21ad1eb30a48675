"""Who is calling: the authenticated client is the owner of the threads it creates.

Tokens are compared in constant time. ``CONVMEM_TOKEN`` admits one client (owner
``default``); ``CONVMEM_CLIENT_TOKENS="alice=tok1,bob=tok2"`` names several, each
seeing only its own threads.
"""

from __future__ import annotations

import contextvars
import hmac

from convmem.errors import ConfigurationError

# Set per request by the HTTP and WebSocket front ends; stdio leaves the default.
current_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "convmem_owner", default=None
)


class TokenTable:
    def __init__(self, tokens: dict[str, str], operators: frozenset[str] = frozenset()) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]
        unknown = operators - tokens.keys()
        if unknown:
            raise ConfigurationError(
                f"CONVMEM_OPERATORS names {', '.join(sorted(unknown))}, which no token"
                " belongs to: name clients of CONVMEM_CLIENT_TOKENS (or 'default' for"
                " CONVMEM_TOKEN)"
            )
        self.operators = operators

    @classmethod
    def from_settings(
        cls, token: str | None, client_tokens: str | None, operators: str | None = None
    ) -> TokenTable:
        tokens: dict[str, str] = {}
        if token:
            tokens["default"] = token
        for entry in (client_tokens or "").split(","):
            if not entry.strip():
                continue
            name, sep, value = entry.strip().partition("=")
            if not sep or not name or not value:
                raise ConfigurationError(
                    "CONVMEM_CLIENT_TOKENS must look like 'alice=token1,bob=token2'"
                )
            tokens[name] = value
        named = frozenset(name.strip() for name in (operators or "").split(",") if name.strip())
        return cls(tokens, named)

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def is_operator(self, owner: str | None) -> bool:
        """Whether this client may see the whole server's counters (``memory_stats``):
        anyone when no token is required, the one client when there is one, else the
        clients ``CONVMEM_OPERATORS`` names."""
        if not self._tokens or (len(self._tokens) == 1 and not self.operators):
            return True
        return owner is not None and owner in self.operators

    def owner_of(self, presented: str | None) -> str | None:
        """The client a token belongs to, or None; every entry is compared, in constant time."""
        if presented is None:
            return None
        candidate = presented.encode()
        found = None
        for name, token in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = name
        return found
