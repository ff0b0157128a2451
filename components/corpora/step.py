"""The ``corpora`` step: the training text of the listing representations (paper 000 A.2, A.3, §3.3; DESIGN §7).

Per day of the corpus window (``window.corpus_dates``, ending at the last training day so
the representations never see the validation or test days), a Beam job writes:

- ``derived/sessions/dt=X``: one row per one-hour session (user key, start, viewed listing
  ids in order, whether it holds a purchase);
- ``derived/coclick/dt=X``: pairs of listings viewed in the same session, with how many
  sessions;
- ``derived/listing_text/dt=L``: normalized title, tags and taxonomy text of the catalog
  snapshot of the last corpus day ``L`` (when the lake has a catalog).

Then the run's corpus files go to ``runs/D/corpora/corpus/``: ``skipgram.txt`` (a line of
listing ids per session with at least ``min_skipgram_views`` views; sessions with a
purchase repeated ``purchase_upsample`` times; lines in a seeded, stable shuffled order),
``coclick.parquet`` (pairs summed over the window) and ``text.txt`` (a listing's text per line).
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.corpora.config import CorporaConfig
from components.corpora.sessions import PAIRS_SCHEMA, SESSIONS_SCHEMA, count_pairs
from components.corpora.text import TEXT_SCHEMA
from components.lake import Lake, atomic_dir, commit, fs, parquet, stage
from components.step import StepError, StepResult
from components.validate.step import validated_dir, validated_files
from schemas.validation import stable_bucket

MINUTE_MS = 60_000
CORPUS_DIR = "corpus"


def sessions_dir(lake: Lake, day) -> str:
    return lake.derived("sessions", day)


def coclick_dir(lake: Lake, day) -> str:
    return lake.derived("coclick", day)


def listing_text_dir(lake: Lake, day) -> str:
    return lake.derived("listing_text", day)


def corpus_dir(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, "corpora"), CORPUS_DIR)


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Build the corpus window's per-day corpora, then the run's corpus files. ``config``: the
    pipeline config (reads ``.corpora``, ``.window``, ``.beam``, ``.seed``, ``.runtime.force``)."""
    import apache_beam as beam

    from components.corpora.transforms import ListingText, SessionsDay

    cfg: CorporaConfig = config.corpora
    days = config.window.corpus_dates(date)
    result = StepResult()
    staged: dict[str, tuple[str, str]] = {}  # final dir -> staged dir
    try:
        with beam.Pipeline(options=config.beam.pipeline_options("adsformer-corpora")) as p:
            for day in days:
                out_s, out_p = sessions_dir(lake, day), coclick_dir(lake, day)
                if lake.complete(out_s) and lake.complete(out_p) and not config.runtime.force:
                    result.notes.append(f"sessions and co-clicks of {day} already built")
                    continue
                events = validated_files(lake, "events", day)
                if events is None:
                    raise StepError(f"corpora: validated events of {day} are missing under "
                                    f"{lake.path('derived', 'validated', 'events')}; run the validate step first")
                result.inputs.append(validated_dir(lake, "events", day))
                staged[out_s], staged[out_p] = stage(out_s), stage(out_p)
                progress(f"  sessions of {day}: {len(events)} event files")
                _ = p | f"Sessions{day}" >> SessionsDay(events, staged[out_s], staged[out_p],
                                                        cfg.session_minutes * MINUTE_MS, cfg.coclick_max_listings,
                                                        cfg.num_buckets)
            catalog_day = days[-1]
            out_t = listing_text_dir(lake, catalog_day)
            listings = validated_files(lake, "listings", catalog_day)
            if lake.complete(out_t) and not config.runtime.force:
                result.notes.append(f"listing text of {catalog_day} already built")
            elif listings is None:
                result.notes.append(f"no validated catalog of {catalog_day}: no listing-text corpus "
                                    "(events-only logs have none)")
            else:
                result.inputs.append(validated_dir(lake, "listings", catalog_day))
                staged[out_t] = stage(out_t)
                progress(f"  listing text of the {catalog_day} catalog")
                _ = p | "ListingText" >> ListingText(listings, staged[out_t],
                                                     cfg.stop_token if cfg.mask_stop_words else None, cfg.number_token)
    except BaseException:
        for tmp in staged.values():
            fs.delete_tree(tmp)
        raise
    for final, tmp in staged.items():
        commit(tmp, final)
    _assemble(lake, date, days, cfg, config.seed, result, progress)
    return result


def _assemble(lake: Lake, date, days, cfg: CorporaConfig, seed: int, result: StepResult, progress) -> None:
    """The run's corpus files from the per-day datasets (streamed a day at a time)."""
    progress("  assembling the run's corpus files")
    target = corpus_dir(lake, date)
    stats = {"sessions": 0, "purchase_sessions": 0, "skipgram_lines": 0, "skipgram_tokens": 0, "listing_views": 0}
    pair_tables = []
    with atomic_dir(target, success=False) as tmp:
        with fs.open_write(fs.join(tmp, "skipgram.txt")) as out:
            for day in days:
                sessions = parquet.read_partition(sessions_dir(lake, day), schema=SESSIONS_SCHEMA)
                result.row_counts[f"sessions/{day}"] = sessions.num_rows
                result.outputs[f"sessions/{day}"] = sessions_dir(lake, day)
                lines = _skipgram_lines(sessions, cfg, seed)
                if lines:
                    out.write(("\n".join(lines) + "\n").encode())
                views = pc.list_value_length(sessions.column("listings"))
                stats["sessions"] += sessions.num_rows
                stats["purchase_sessions"] += int(pc.sum(sessions.column("purchased")).as_py() or 0)
                stats["listing_views"] += int(pc.sum(views).as_py() or 0)
                stats["skipgram_lines"] += len(lines)
                stats["skipgram_tokens"] += sum(line.count(" ") + 1 for line in lines)
                pairs = parquet.read_partition(coclick_dir(lake, day), schema=PAIRS_SCHEMA)
                result.row_counts[f"coclick/{day}"] = pairs.num_rows
                result.outputs[f"coclick/{day}"] = coclick_dir(lake, day)
                pair_tables.append(pairs)
        pairs = count_pairs(pa.concat_tables(pair_tables))
        parquet.write_table(pairs, fs.join(tmp, "coclick.parquet"))
        stats["coclick_pairs"] = pairs.num_rows
        text_dir = listing_text_dir(lake, days[-1])
        if lake.complete(text_dir):
            text = parquet.read_partition(text_dir, schema=TEXT_SCHEMA).sort_by("listing_id")
            body = "\n".join(text.column("text").to_pylist())
            fs.write_bytes(fs.join(tmp, "text.txt"), (body + "\n").encode() if body else b"")
            stats["text_lines"] = text.num_rows
            result.row_counts[f"listing_text/{days[-1]}"] = text.num_rows
            result.outputs[f"listing_text/{days[-1]}"] = text_dir
        fs.write_text(fs.join(tmp, "stats.json"), json.dumps(stats, indent=2, sort_keys=True) + "\n")
    result.outputs["corpus"] = target
    result.row_counts["skipgram_lines"] = stats["skipgram_lines"]
    result.row_counts["coclick_pairs"] = stats["coclick_pairs"]
    result.metrics["corpus"] = {**stats, "days": [d.isoformat() for d in days],
                                "mean_views_per_session": round(stats["listing_views"] / max(stats["sessions"], 1), 3)}
    if stats["skipgram_lines"] == 0:
        raise StepError(f"corpora: no session of {days[0]}..{days[-1]} has {cfg.min_skipgram_views}+ listing views, "
                        "so the skip-gram corpus would be empty; check the events (are there 'view' actions?)")


def _skipgram_lines(sessions: pa.Table, cfg: CorporaConfig, seed: int) -> list[str]:
    """Lines of one day's sessions: purchase sessions repeated, in a seeded stable order."""
    keep = pc.greater_equal(pc.list_value_length(sessions.column("listings")), cfg.min_skipgram_views)
    sessions = sessions.filter(keep)
    if sessions.num_rows == 0:
        return []
    copies = np.where(sessions.column("purchased").to_numpy(zero_copy_only=False), cfg.purchase_upsample, 1)
    rows = np.repeat(np.arange(sessions.num_rows), copies)
    copy = np.arange(len(rows)) - np.repeat(np.cumsum(copies) - copies, copies)
    ident = pc.binary_join_element_wise(
        sessions.column("user_key").take(pa.array(rows)),
        pc.cast(pc.cast(sessions.column("start_ts").take(pa.array(rows)), pa.int64()), pa.string()),
        pa.array(copy.astype(str)), pa.array([str(seed)] * len(rows)), "|")
    order = np.lexsort((np.arange(len(rows)), stable_bucket(ident, 2**31 - 1)))
    text = pc.binary_join(sessions.column("listings"), " ")
    return text.take(pa.array(rows[order])).to_pylist()
