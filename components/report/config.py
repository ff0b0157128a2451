"""Settings of the run report (DESIGN §3 ``runs/D/report/index.html``)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trend_runs: int = Field(30, ge=1, description="runs shown in the daily ROC-AUC trend (paper 000 Figure 8)")
    gallery_queries: int = Field(4, ge=1, description="query listings per nearest-neighbour gallery (paper 000 Figure 4)")
    gallery_neighbours: int = Field(5, ge=1, description="neighbours shown per query listing")
    reliability_bins: int = Field(10, ge=2, description="bins of the reliability diagrams")
