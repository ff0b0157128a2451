"""Per-day figures the data gates compare, and the comparison itself (DESIGN §4; issue "data gates").

A day's figures come from the validated and dead-letter partitions ``validate`` wrote: row
counts from the Parquet footers (no data read), the click rate from the ``clicked`` column of
the validated impressions. A day is judged against the **median** of the same figures over the
validated days before it, so one bad reference day cannot move the reference by itself.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import statistics

import pyarrow.compute as pc

from components.lake import Lake, fs, parquet
from components.validate.step import dead_letter_dir, validated_dir

VOLUME_TABLES = ("events", "impressions", "listings")


def day_figures(lake: Lake, day: dt.date, tables) -> dict | None:
    """``{"<table>_rows": n, "<table>_dead_fraction": f, "click_rate": r}`` for the tables validated on
    ``day``, or None when none is."""
    out: dict[str, float] = {}
    for table in tables:
        valid_dir = validated_dir(lake, table, day)
        if not lake.complete(valid_dir):
            continue
        n_valid = parquet.count_rows(valid_dir)
        dead_dir = dead_letter_dir(lake, table, day)
        n_dead = parquet.count_rows(dead_dir) if fs.exists(dead_dir) else 0
        out[f"{table}_rows"] = n_valid
        out[f"{table}_dead_fraction"] = n_dead / (n_valid + n_dead) if n_valid + n_dead else 0.0
        if table == "impressions" and n_valid:
            clicked = parquet.read_partition(valid_dir, columns=["clicked"]).column("clicked")
            out["click_rate"] = pc.mean(pc.cast(clicked, "float64")).as_py()
    return out or None


@dataclasses.dataclass(frozen=True)
class Check:
    """One figure of one day against its reference and the limits it must stay within."""

    figure: str
    value: float
    reference: float
    low: float | None
    high: float | None

    @property
    def ok(self) -> bool:
        return (self.low is None or self.value >= self.low) and (self.high is None or self.value <= self.high)

    def describe(self) -> str:
        bounds = " and ".join(b for b in (f">= {self.low:.4g}" if self.low is not None else "",
                                          f"<= {self.high:.4g}" if self.high is not None else "") if b)
        return f"{self.figure} = {self.value:.4g} (reference median {self.reference:.4g}; allowed {bounds})"

    def to_dict(self) -> dict:
        return {"figure": self.figure, "value": self.value, "reference": self.reference, "low": self.low,
                "high": self.high, "ok": self.ok}


def judge(figures: dict, history: list[dict], cfg) -> list[Check]:
    """The checks of one day's ``figures`` against the medians of ``history`` (figures of earlier days)."""
    checks = []
    for name, value in sorted(figures.items()):
        past = [h[name] for h in history if name in h]
        if not past:
            continue
        ref = statistics.median(past)
        if name.endswith("_rows"):
            checks.append(Check(name, value, ref, cfg.min_volume_ratio * ref, cfg.max_volume_ratio * ref))
        elif name == "click_rate":
            checks.append(Check(name, value, ref, ref * (1 - cfg.max_click_rate_change),
                                ref * (1 + cfg.max_click_rate_change)))
        elif name.endswith("_dead_fraction"):
            checks.append(Check(name, value, ref, None, ref + cfg.max_dead_letter_increase))
    return checks
