"""Settings of the corpora step (paper 000 A.2: one-hour sessions, purchase sessions upsampled 5:1)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CorporaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_minutes: int = Field(60, ge=1, description="a session is a user key's events within this long of its first event")
    purchase_upsample: int = Field(5, ge=1, description="copies of each session with a purchase in the skip-gram corpus")
    min_skipgram_views: int = Field(2, ge=1, description="sessions with fewer listing views give no skip-gram line")
    coclick_max_listings: int = Field(10, ge=2, description="co-click pairs come from a session's first N distinct listings")
    num_buckets: int = Field(8, ge=1, description="user-key buckets (shuffle keys and output files per day)")
    mask_stop_words: bool = Field(True, description="replace English stop-words with the stop token in listing text")
    stop_token: str = "<stop>"
    number_token: str = "<num>"
