"""A section of a generated document (BENCHMARKS.md, RELIABILITY.md) that another
command writes, between two HTML-comment marks, so that each command can rewrite its own
part and carry the others' over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Section:
    start: str  # e.g. "<!-- soak: written by make soak -->"
    end: str

    def of(self, document: Path) -> str | None:
        """The section the document holds, marks included, or None."""
        text = document.read_text() if document.exists() else ""
        if self.start not in text or self.end not in text:
            return None
        return self.start + text.partition(self.start)[2].partition(self.end)[0] + self.end

    def write(self, document: Path, section: str) -> None:
        """Put ``section`` into the document in place of the one before (else at the end)."""
        text = document.read_text() if document.exists() else ""
        if self.start in text and self.end in text:
            head, _, rest = text.partition(self.start)
            text = head + section + rest.partition(self.end)[2]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        document.write_text(text)
