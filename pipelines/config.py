"""Typed pipeline configuration: YAML presets in pipelines/configs/, overridable from the CLI (DESIGN §11).

A preset file may ``extends:`` another; ``--set a.b=value`` overrides any field
(``value`` is parsed as YAML, so numbers, booleans and lists work).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.beam_options import BeamConfig
from components.bless.config import BlessConfig
from components.corpora.config import CorporaConfig
from components.dicts import deep_merge
from components.gates.config import GatesConfig
from components.marketplace.config import MarketplaceConfig
from components.models.config import ModelsConfig
from components.references.config import ReferencesConfig
from components.report.config import ReportConfig
from components.representations.config import RepresentationsConfig
from components.sessionize.config import SessionizeConfig
from components.transform.config import TransformConfig
from components.validate.step import ValidateConfig
from components.window import WindowConfig

CONFIG_DIR = pathlib.Path(__file__).with_name("configs")


class RuntimeOptions(BaseModel):
    """How this invocation runs; not part of the config hash."""

    model_config = ConfigDict(extra="forbid")
    force: bool = False
    from_step: str | None = None
    lock_ttl_hours: float = Field(24.0, gt=0, description="a run's lock of its date expires this long after its "
                                  "last finished step (longer than the longest step)")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str = "local"
    source: Literal["synthetic", "lake"] = Field(
        "synthetic", description="synthetic: the DAG generates missing raw days; lake: raw data is already there")
    default_date: dt.date | None = Field(None, description="logical date when --date is not given")
    seed: int = 7
    marketplace: MarketplaceConfig = Field(default_factory=MarketplaceConfig)
    marketplace_start: dt.date = dt.date(2026, 3, 1)
    marketplace_days: int = Field(5, ge=1)
    window: WindowConfig = Field(default_factory=WindowConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    gates: GatesConfig = Field(default_factory=GatesConfig)
    sessionize: SessionizeConfig = Field(default_factory=SessionizeConfig)
    corpora: CorporaConfig = Field(default_factory=CorporaConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    representations: RepresentationsConfig = Field(default_factory=RepresentationsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    references: ReferencesConfig = Field(default_factory=ReferencesConfig)
    bless: BlessConfig = Field(default_factory=BlessConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions, exclude=True)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def validate(self) -> ValidateConfig:  # noqa: F811 - BaseModel.validate is deprecated in pydantic v2
        return self.validate_

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of everything that shapes outputs (runtime options excluded)."""
        payload = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def resolved_date(self, date: dt.date | None) -> dt.date:
        if date is not None:
            return date
        if self.default_date is None:
            raise ConfigError(f"preset {self.preset!r} has no default_date; pass --date YYYY-MM-DD")
        return self.default_date


class ConfigError(ValueError):
    """A preset or override is invalid; the message names the field."""


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_preset(name_or_path: str, seen=()) -> dict:
    path = pathlib.Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name_or_path!r}; available: {', '.join(presets())} (or a path to a YAML file)")
    if str(path) in seen:
        raise ConfigError(f"preset {path} extends itself")
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("extends", None)
    name = data.get("preset", path.stem)
    if parent:
        data = deep_merge(_read_preset(parent, seen + (str(path),)), data)
    data["preset"] = name
    return data


def _apply_override(data: dict, assignment: str) -> dict:
    if "=" not in assignment:
        raise ConfigError(f"--set expects key.path=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    node = {}
    parts = key.strip().split(".")
    leaf = node
    for part in parts[:-1]:
        leaf = leaf.setdefault(part, {})
    leaf[parts[-1]] = value
    return deep_merge(data, node)


def load_config(preset: str = "local", overrides: list[str] = (), **runtime) -> PipelineConfig:
    """Load a preset (name or YAML path), apply ``key=value`` overrides, validate."""
    data = _read_preset(preset)
    for assignment in overrides:
        data = _apply_override(data, assignment)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration (preset {preset!r}):\n{err}") from err
    cfg.runtime = RuntimeOptions(**runtime)
    return cfg
