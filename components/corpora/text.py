"""Normalized listing text for the text representations (paper 000 A.3; DESIGN §7).

Lowercase; punctuation and symbols become spaces; numbers and English stop-words are
replaced by mask tokens (masking, not dropping, keeps skip-gram context distances);
whitespace is collapsed. Vectorized with pyarrow's RE2 kernels; the stop-word list is
scikit-learn's English list, not a hand-made one.
"""
from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

TEXT_SCHEMA = pa.schema([
    ("listing_id", pa.string()),
    ("title", pa.string()),
    ("tags", pa.string()),
    ("taxonomy", pa.string()),
    ("text", pa.string()),  # title, tags and taxonomy path, in that order
])


@functools.lru_cache(maxsize=1)
def _stop_word_pattern() -> str:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = sorted(ENGLISH_STOP_WORDS, key=lambda w: (-len(w), w))
    # RE2's \b is ASCII-only ("crème" would contain the stop-word "me"), so tokens are
    # delimited by the single spaces left after punctuation removal instead.
    return r"(^| )(?:" + "|".join(words) + r")( |$)"


def normalize(strings: pa.Array, stop_token: str | None, number_token: str) -> pa.Array:
    """The normalized form of each string (null becomes empty)."""
    out = pc.utf8_lower(pc.fill_null(strings, ""))
    out = pc.replace_substring_regex(out, r"[^\p{L}\p{N}]+", " ")
    out = pc.replace_substring_regex(out, r"[\p{L}\p{N}]*\p{N}[\p{L}\p{N}]*", "\x00num\x00")
    if stop_token is not None:
        # A match consumes the space after it, so adjacent stop-words need a second pass.
        for _ in range(2):
            out = pc.replace_substring_regex(out, _stop_word_pattern(), "\\1\x00stop\x00\\2")
        out = pc.replace_substring(out, "\x00stop\x00", stop_token)
    out = pc.replace_substring(out, "\x00num\x00", number_token)
    out = pc.replace_substring_regex(out, r"\s+", " ")
    return pc.utf8_trim_whitespace(out)


def listing_text(listings: pa.Table, stop_token: str | None, number_token: str) -> pa.Table:
    """``TEXT_SCHEMA`` rows for a catalog table (listing_id, title, tags, taxonomy_path)."""
    tags = pc.binary_join(pc.fill_null(listings.column("tags"), pa.scalar([], pa.list_(pa.string()))), " ")
    taxonomy = pc.replace_substring_regex(listings.column("taxonomy_path"), r"[._]", " ")
    parts = [normalize(c, stop_token, number_token) for c in (listings.column("title"), tags, taxonomy)]
    text = pc.utf8_trim_whitespace(pc.binary_join_element_wise(*parts, " "))
    text = pc.replace_substring_regex(text, r"\s+", " ")
    return pa.table({"listing_id": listings.column("listing_id"), "title": parts[0], "tags": parts[1],
                     "taxonomy": parts[2], "text": text}, schema=TEXT_SCHEMA)
