"""The YAML mapping from a source event log to the raw events schema (``adsformer import``).

A mapping says how to read the file (``input``), where each events field comes from
(``fields``), how source action values translate (``actions``) and the unit of the time
column (``time_unit``). Example (pipelines/configs/import/taobao.yaml)::

    input: {format: csv, header: false, columns: [user_id, item_id, category_id, behavior, timestamp]}
    time_unit: s                          # s | ms | us | ns | iso
    fields:
      event_id: {hash: [user_id, item_id, category_id, behavior, timestamp]}
      user_id: user_id                    # a source column (short for {column: user_id})
      browser_id: user_id
      ts: timestamp
      action: behavior
      listing_id: item_id
      shop_id: {const: unknown}           # a constant
      taxonomy_id: category_id
      query: null                         # always null
      platform: {const: web}
    actions: {pv: view, cart: cart_add, fav: favorite, buy: purchase}

Every events field must be listed, so each source's gaps are decided in its mapping.
``hash`` makes a deterministic id from source columns; ``_file`` (the input's base name)
and ``_row`` (0-based row of the input, after ``explode``) may be among them. Action
values missing from ``actions`` are written verbatim, for validate to dead-letter.
"""
from __future__ import annotations

import pathlib
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.raw import ACTIONS, LISTING_ACTIONS, PLATFORMS

SPECIAL_COLUMNS = ("_file", "_row")


class ImportFailed(ValueError):
    """The import cannot proceed; the message is one line that says what and where."""


class MappingError(ImportFailed):
    """A mapping file is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class InputSpec(_Strict):
    format: Literal["csv", "jsonl", "parquet"]
    header: bool = Field(True, description="csv: the first line names the columns")
    columns: list[str] | None = Field(None, description="csv without header: the column names, in order")
    delimiter: str = Field(",", min_length=1, max_length=1)
    explode: str | None = Field(None, description="jsonl/parquet: a list-of-objects column; one event per element, "
                                                  "the record's other columns carried down")

    @model_validator(mode="after")
    def _consistent(self):
        if self.format == "csv":
            if not self.header and not self.columns:
                raise ValueError("a csv without header needs columns: [names in file order]")
            if self.header and self.columns:
                raise ValueError("columns is only for a csv without header (header: false)")
            if self.explode:
                raise ValueError("explode is for nested jsonl/parquet, not csv")
        elif self.columns is not None or not self.header or self.delimiter != ",":
            raise ValueError(f"header/columns/delimiter are csv options; format is {self.format}")
        return self


class Source(_Strict):
    """Where one events field comes from: exactly one of ``column``, ``const``, ``hash``."""

    column: str | None = None
    const: str | None = None
    hash: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"column": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("column", "const", "hash") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: a column name, {column: NAME}, {const: VALUE}, "
                             f"{{hash: [COLUMNS]}} (got {', '.join(given) or 'none'})")
        return self

    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.hash or [])


class Fields(_Strict):
    """One entry per raw events field (schemas/raw.py); null means the field is always null."""

    event_id: Source
    user_id: Source | None
    browser_id: Source
    ts: Source
    action: Source
    listing_id: Source | None
    shop_id: Source | None
    taxonomy_id: Source | None
    query: Source | None
    platform: Source

    @field_validator("ts")
    @classmethod
    def _ts_is_a_column(cls, value: Source):
        if value.column is None:
            raise ValueError("ts must be a source column")
        return value

    @field_validator("platform")
    @classmethod
    def _platform_const(cls, value: Source):
        if value.const is not None and value.const not in PLATFORMS:
            raise ValueError(f"const {value.const!r} is not a platform ({', '.join(PLATFORMS)})")
        return value


class Mapping(_Strict):
    name: str = ""
    description: str = ""
    input: InputSpec
    time_unit: Literal["s", "ms", "us", "ns", "iso"]
    fields: Fields
    actions: dict[str, Literal[ACTIONS]] = Field(default_factory=dict)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _complete(self):
        f = self.fields
        if f.action.const is not None and f.action.const not in ACTIONS:
            raise ValueError(f"fields.action: const {f.action.const!r} is not an action ({', '.join(ACTIONS)})")
        produced = set(self.actions.values()) | ({f.action.const} if f.action.const else set())
        if not self.actions and f.action.column:
            produced = set(ACTIONS)  # source values used verbatim: any action may appear
        for name in ("listing_id", "shop_id", "taxonomy_id"):
            if getattr(f, name) is None and produced & set(LISTING_ACTIONS):
                raise ValueError(f"fields.{name} is null, but the events schema requires it for listing actions "
                                 f"({', '.join(LISTING_ACTIONS)}): map it to a column, or to a const if the "
                                 "source has none")
        if f.query is None and "search" in produced:
            raise ValueError("fields.query is null, but search events require a query")
        if self.input.columns is not None:
            known = set(self.input.columns) | set(SPECIAL_COLUMNS)
            for name in Fields.model_fields:
                source = getattr(f, name)
                for col in source.columns() if source else []:
                    if col not in known:
                        raise ValueError(f"fields.{name}: column {col!r} is not in input.columns")
        for name in Fields.model_fields:
            source = getattr(f, name)
            if source and source.column in SPECIAL_COLUMNS:
                raise ValueError(f"fields.{name}: {source.column} is only usable inside hash: [...]")
        return self

    def source_columns(self) -> list[str]:
        """The input columns the mapping reads, sorted (``_file``/``_row`` excluded)."""
        cols = set()
        for name in Fields.model_fields:
            source = getattr(self.fields, name)
            if source:
                cols.update(source.columns())
        return sorted(cols - set(SPECIAL_COLUMNS))


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "Source")))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def resolve(name_or_path: str, directory: pathlib.Path) -> pathlib.Path:
    """A mapping name (a file ``<directory>/<name>.yaml``) or a path to a YAML file."""
    path = pathlib.Path(name_or_path)
    if not path.suffix and "/" not in name_or_path:
        path = directory / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
            raise MappingError(f"unknown mapping {name_or_path!r}; available: {known} (or a path to a YAML file)")
    if not path.exists():
        raise MappingError(f"mapping file not found: {path}")
    return path


def load_mapping(path: pathlib.Path | str) -> Mapping:
    """Parse and check a mapping file; raises :class:`MappingError` with a one-line message."""
    path = pathlib.Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MappingError(f"cannot read mapping {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise MappingError(f"bad mapping {path}: expected a YAML mapping at the top level")
    data.setdefault("name", path.stem)
    try:
        return Mapping.model_validate(data)
    except ValidationError as err:
        raise MappingError(f"bad mapping {path}: {_one_line(err)}") from None
