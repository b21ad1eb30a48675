"""The optional extras, and the one message that says which to install when one is missing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from convmem.errors import ConfigurationError


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: from a checkout, or from a built wheel."""
    return f"pip install '.[{extra}]' in the convmem checkout (a wheel: '<wheel file>[{extra}]')"


@contextlib.contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Imports inside need ``extra``: a missing module becomes one ``ConfigurationError``
    that names ``what`` needed it, the module, and the command that installs it."""
    try:
        yield
    except ImportError as exc:
        module = exc.name or str(exc)
        raise ConfigurationError(
            f"{what} needs the '{extra}' extra, which is not installed (no module named"
            f" {module!r}): {install_hint(extra)}"
        ) from exc
