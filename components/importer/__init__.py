"""Import real event logs (CSV, JSONL, Parquet) into the lake's ``raw/events`` through a YAML mapping.

``load_mapping`` reads a mapping (see ``mapping.py`` for the format), ``import_events``
streams the input files through it and writes one ``raw/events/dt=D`` partition per UTC
day, so validate, sessionize and the corpora run on real logs.
"""
from components.importer.mapping import ImportFailed, Mapping, MappingError, load_mapping, resolve
from components.importer.run import ImportSummary, import_events

__all__ = ["ImportFailed", "ImportSummary", "Mapping", "MappingError", "import_events", "load_mapping", "resolve"]
