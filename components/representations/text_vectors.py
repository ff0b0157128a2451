"""The ``text_vectors`` step: token vectors and per-listing text vectors (paper 000 A.7, §3.2.2; DESIGN §7).

1. Rare-token filter: tokens of the normalized text corpus (``runs/D/corpora/corpus/text.txt``)
   seen fewer than ``min_count`` times are dropped, unless they occur in recent ad
   interactions (the text of listings whose ads were clicked in the last ``ad_token_days``
   days up to the last training day, and those impressions' queries).
2. fastText skipgram with subwords 3-6, 5 negatives, lr 0.05, 5 epochs, window 5, dim 128/256
   on the filtered corpus.
3. For every listing of the catalog of D: the average of its known tokens' vectors per field
   (title, tags, taxonomy path) → ``fields.parquet`` (AIR's text input); the mean of the
   non-empty fields → ``vectors.parquet`` (the text representation). Mask tokens (stop-words,
   numbers) carry no meaning and are not pooled.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.corpora.text import listing_text, normalize
from components.lake import Lake, fs, parquet
from components.representations import fasttext_train
from components.representations.driver import Representation, run_representation
from components.representations.skipgram import corpus_file
from components.representations.store import TEXT_FIELDS, Vectors, catalog, fields_path, write_fields
from components.step import StepResult
from components.validate.step import validated_files


def token_counts(lines: pa.Array) -> dict[str, int]:
    tokens = pc.list_flatten(pc.utf8_split_whitespace(lines))
    tokens = tokens.filter(pc.not_equal(tokens, ""))  # an empty line splits into [""]
    counts = pc.value_counts(tokens)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def keep_tokens(lines: pa.Array, keep: pa.Array) -> pa.Array:
    """``lines`` with every token not in ``keep`` removed (vectorized: split, filter, re-join)."""
    split = pc.utf8_split_whitespace(lines)
    flat = pc.list_flatten(split)
    parent = pc.list_parent_indices(split).to_numpy()
    mask = pc.is_in(flat, value_set=keep).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parent[mask], minlength=len(lines)))]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(mask)))
    return pc.binary_join(kept, " ")


def pool_fields(texts: pa.Table, vocab: list[str], matrix: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Field -> (mean vector of its in-vocabulary tokens per row, number of such tokens per row)."""
    out = {}
    for field in TEXT_FIELDS:
        split = pc.utf8_split_whitespace(pc.fill_null(texts.column(field), ""))
        index = pc.index_in(pc.list_flatten(split), value_set=pa.array(vocab, pa.string()))
        parent = pc.list_parent_indices(split).to_numpy()
        valid = pc.is_valid(index).to_numpy(zero_copy_only=False)
        rows, cols = parent[valid], index.filter(pc.is_valid(index)).to_numpy()
        sums = np.zeros((texts.num_rows, matrix.shape[1]), dtype=np.float64)
        np.add.at(sums, rows, matrix[cols])
        counts = np.bincount(rows, minlength=texts.num_rows)
        out[field] = ((sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts)
    return out


def _has_words(catalog: pa.Table) -> bool:
    """Whether any listing of the catalog has a non-empty title or tag."""
    titles = pc.fill_null(catalog.column("title"), "") if "title" in catalog.column_names else None
    if titles is not None and pc.any(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(titles)), 0)).as_py():
        return True
    if "tags" in catalog.column_names:
        return bool(pc.any(pc.greater(pc.fill_null(pc.list_value_length(catalog.column("tags")), 0), 0)).as_py())
    return False


class TextRepresentation(Representation):
    name = "text"

    def prepare(self, config, date: dt.date, lake: Lake, progress) -> str | None:
        self.cfg, self.corpora = config.representations.text, config.corpora
        self.corpus = corpus_file(lake, date, "text.txt")
        self.fields_out = fields_path(lake, date)
        self.catalog = catalog(lake, date)
        if self.catalog is None:
            return "no catalog for this date (events-only logs): no listing text"
        if not fs.exists(self.corpus) or not fs.read_bytes(self.corpus).strip():
            return "the listing-text corpus is empty (the catalog has no titles, tags or taxonomy text)"
        if not _has_words(self.catalog):
            return ("the catalog has no titles and no tags (only taxonomy ids): text vectors need listing text; "
                    "components that read them (AIR's text input, ADPM lookups) go without")
        self.texts = listing_text(self.catalog, config.corpora.stop_token if config.corpora.mask_stop_words else None,
                                  config.corpora.number_token)
        self.ad_days = [d for d in _days_back(config.window.corpus_dates(date)[-1], self.cfg.ad_token_days)
                        if validated_files(lake, "impressions", d)]
        self.lake = lake
        return None

    def _ad_tokens(self) -> pa.Array:
        """Tokens of recently clicked ads' listing text and of their queries."""
        clicked, queries = [], []
        for day in self.ad_days:
            for f in validated_files(self.lake, "impressions", day):
                imp = parquet.read_file(f, columns=["listing_id", "query", "clicked"])
                imp = imp.filter(imp.column("clicked"))
                clicked.append(imp.column("listing_id"))
                queries.append(imp.column("query"))
        if not clicked:
            return pa.array([], pa.string())
        stop = self.corpora.stop_token if self.corpora.mask_stop_words else None
        listings = pc.unique(pa.chunked_array(clicked).combine_chunks())
        text = self.texts.filter(pc.is_in(self.texts.column("listing_id"), value_set=listings)).column("text")
        query_text = normalize(pa.chunked_array(queries).combine_chunks(), stop, self.corpora.number_token)
        lines = pa.concat_arrays([text.combine_chunks(), query_text])
        return pa.array(list(token_counts(lines)), pa.string())

    def train(self, model_dir: str, progress) -> dict:
        cfg = self.cfg
        lines = pa.array(fs.read_text(self.corpus).splitlines(), pa.string())
        counts = token_counts(lines)
        ad_tokens = set(self._ad_tokens().to_pylist())
        keep = sorted(t for t, c in counts.items() if c >= cfg.min_count or t in ad_tokens)
        rescued = sum(1 for t in keep if counts[t] < cfg.min_count)
        progress(f"  text corpus: {len(lines):,} lines, {len(counts):,} tokens; {len(keep):,} kept "
                 f"(min count {cfg.min_count}; {rescued:,} rarer ones kept as recent ad tokens)")
        filtered = keep_tokens(lines, pa.array(keep, pa.string()))
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="adsformer-text-") as tmp:
            path = os.path.join(tmp, "text.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(filtered.to_pylist()) + "\n")
            progress(f"  fastText skipgram with subwords {cfg.min_subword}-{cfg.max_subword}, dim {cfg.dim}, "
                     f"{cfg.epochs} epochs")
            model = fasttext_train.train(path, model_dir, model="skipgram", loss="ns", neg=cfg.negatives,
                                         dim=cfg.dim, ws=cfg.window, epoch=cfg.epochs, lr=cfg.learning_rate,
                                         minn=cfg.min_subword, maxn=cfg.max_subword, bucket=cfg.subword_buckets, minCount=1, thread=cfg.threads)
        return {"corpus_tokens": len(counts), "kept_tokens": len(keep), "dropped_tokens": len(counts) - len(keep),
                "kept_below_min_count_as_ad_tokens": rescued, "ad_token_days": [d.isoformat() for d in self.ad_days],
                "corpus_lines": len(lines), "vocabulary": len(fasttext_train.vocabulary(model)),
                "seconds": round(time.perf_counter() - t0, 2)}

    def infer(self, model_dir: str, progress) -> Vectors:
        model = fasttext_train.load(model_dir)
        masks = {self.corpora.stop_token, self.corpora.number_token}
        vocab = [w for w in fasttext_train.vocabulary(model) if w not in masks]
        pooled = pool_fields(self.texts, vocab, fasttext_train.word_vectors(model, vocab))
        ids = np.array(self.texts.column("listing_id").to_pylist(), dtype=object)
        write_fields(self.fields_out, ids, {f: v for f, (v, _) in pooled.items()})
        present = np.stack([n > 0 for _, n in pooled.values()], axis=1)
        total = sum(v for v, _ in pooled.values())
        has_text = present.any(axis=1)
        self.coverage = {"catalog_listings": len(ids), "with_text_vector": int(has_text.sum()),
                         **{f"with_{f}": int(n.astype(bool).sum()) for f, (_, n) in pooled.items()}}
        mean = total[has_text] / present[has_text].sum(axis=1, keepdims=True)
        return Vectors(ids[has_text], mean)

    def describe(self) -> dict:
        return {"fields": self.fields_out, "coverage": getattr(self, "coverage", {})}


def _days_back(last: dt.date, days: int) -> list[dt.date]:
    return [last - dt.timedelta(days=i) for i in range(days - 1, -1, -1)]


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    return run_representation(config, date, lake, TextRepresentation(), progress)
