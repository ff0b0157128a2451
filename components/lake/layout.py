"""Paths of the lake (DESIGN §3); the one place that knows them."""
from __future__ import annotations

import dataclasses
import datetime as dt

from components.lake import fs
from components.lake.commit import is_complete


def day_str(day: dt.date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


@dataclasses.dataclass(frozen=True)
class Lake:
    """A lake rooted at a local path or a URI (gs://, s3://)."""

    root: str

    def __post_init__(self):
        object.__setattr__(self, "root", self.root.rstrip("/") or "/")

    def path(self, *parts: str) -> str:
        return fs.join(self.root, *parts)

    def raw(self, table: str, day) -> str:
        return self.path("raw", table, f"dt={day_str(day)}")

    def images(self) -> str:
        return self.path("raw", "images")

    def oracle(self, table: str, day) -> str:
        return self.path("oracle", table, f"dt={day_str(day)}")

    def derived(self, name: str, day) -> str:
        return self.path("derived", name, f"dt={day_str(day)}")

    def run_dir(self, day, step: str | None = None) -> str:
        return self.path("runs", day_str(day), step) if step else self.path("runs", day_str(day))

    def model(self, task: str) -> str:
        return self.path("models", task)

    def raw_days(self, table: str) -> list[dt.date]:
        """Dates that have a raw partition of ``table``."""
        return _partition_days(fs.list_dirs(self.path("raw", table)))

    def complete(self, directory: str) -> bool:
        return is_complete(directory)


def _partition_days(names: list[str]) -> list[dt.date]:
    days = []
    for name in names:
        if name.startswith("dt=") and ".tmp-" not in name:
            try:
                days.append(dt.date.fromisoformat(name[3:]))
            except ValueError:
                continue
    return sorted(days)
