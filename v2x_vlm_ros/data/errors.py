"""Errors and skip accounting for the data layer.

A problem in a file the whole dataset depends on (a data_info.json) raises
``DatasetError``. A problem confined to one record or one frame makes that record a
counted skip (``SkipLog``), reported by ``v2x-vlm dataset summary``, unless the reader is
strict, in which case it raises too. Every message names the file and the field.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A data file is missing or malformed. ``path`` and ``field`` name the culprit."""

    def __init__(self, path, field: str | None, reason: str):
        self.path = str(path)
        self.field = field
        self.reason = reason
        where = self.path if field is None else f"{self.path}: {field}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Skip:
    """One record or frame left out, and why."""

    code: str  # short machine-readable cause, e.g. "calib_nan"
    path: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.path if self.field is None else f"{self.path}: {self.field}"
        return f"[{self.code}] {where}: {self.reason}"


@dataclass
class SkipLog:
    """Counts skips by cause and keeps every one of them (nothing is lost silently)."""

    strict: bool = False
    items: list[Skip] = field(default_factory=list)

    def add(self, code: str, path, field: str | None, reason: str) -> None:
        if self.strict:
            raise DatasetError(path, field, reason)
        self.items.append(Skip(code, str(path), field, reason))

    def add_error(self, code: str, error: DatasetError) -> None:
        self.add(code, error.path, error.field, error.reason)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.code for s in self.items).items()))

    def __len__(self) -> int:
        return len(self.items)


def relpath(path: Path, root: Path) -> str:
    """Path relative to the dataset root for messages, absolute when outside it."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
