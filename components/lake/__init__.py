"""The data lake of DESIGN §3: layout, atomic directory commits, Parquet and manifests.

Everything goes through Beam's ``FileSystems``, so a ``gs://`` or ``s3://`` root works the
same as a local path.
"""
from components.lake.commit import atomic_dir, commit, is_complete, mark_success, stage
from components.lake.layout import Lake

__all__ = ["Lake", "atomic_dir", "commit", "is_complete", "mark_success", "stage"]
