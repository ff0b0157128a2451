"""The manifest every finished step writes as runs/D/<step>/manifest.json (DESIGN §3).

``manifest.schema.json`` beside this file is generated from :class:`StepManifest`
(``python -m schemas.manifest`` rewrites it; a test keeps the two in sync).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_FILE = pathlib.Path(__file__).with_name("manifest.schema.json")


class StepManifest(BaseModel):
    """What a step read, wrote and measured for one logical date."""

    model_config = ConfigDict(extra="forbid")

    step: str
    logical_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    status: str = Field(pattern=r"^(success)$")
    started_at: str
    finished_at: str
    seconds: float = Field(ge=0)
    config_hash: str = Field(min_length=16)
    code_version: str
    inputs: list[str] = Field(default_factory=list, description="partitions and artifacts read")
    outputs: dict[str, str] = Field(default_factory=dict, description="name -> path written")
    row_counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def json_schema() -> str:
    return json.dumps(StepManifest.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(json_schema())
    print(f"wrote {SCHEMA_FILE}")
