"""The training logs (train_log.csv, eval_log.csv, probe_log.csv): one row per logged step,
appended as training goes, and kept consistent when a stopped run is resumed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class CsvLog:
    """A CSV log with a ``step`` column. ``from_step``: the global step training starts from;
    rows of an earlier run written after it (past its last checkpoint, so about to be
    trained and written again) are dropped, so a resumed run's log has each step once."""

    def __init__(self, path: Path, fields: list[str], from_step: int = 0):
        self.path, self.fields = path, fields
        if path.exists():  # a resumed run keeps the columns the file was started with
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            self.fields = rows[0] if rows else fields
            step = self.fields.index("step") if "step" in self.fields else None
            kept = [r for r in rows[1:] if step is None or _step_at_most(r, step, from_step)]
            if len(kept) < len(rows[1:]):
                log.info("%s: %d rows past step %d (after the last checkpoint) dropped", path,
                         len(rows) - 1 - len(kept), from_step)
                with open(path, "w", newline="") as fh:
                    csv.writer(fh).writerows([self.fields, *kept])
        else:
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(fields)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(f, "") for f in self.fields])


def _step_at_most(row: list[str], column: int, step: int) -> bool:
    try:
        return int(float(row[column])) <= step
    except (IndexError, ValueError):  # a line cut short by the stop: written again
        return False
