"""Beam runner settings and pipeline options (DESIGN §9).

Defaults run on the DirectRunner; any Beam flag (``--runner DataflowRunner --project ...``)
passes through ``extra_args`` unchanged.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BeamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner: str = "DirectRunner"
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    direct_num_workers: int = Field(1, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="passed to Beam verbatim")

    def pipeline_options(self, job_name: str | None = None):
        from apache_beam.options.pipeline_options import PipelineOptions

        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}",
            ]
        if job_name and not any(a.startswith("--job_name") for a in self.extra_args):
            args.append(f"--job_name={job_name}")
        return PipelineOptions(args + list(self.extra_args), save_main_session=False)
