"""Search queries: a structured representation, its text, refinement chains and relevance.

A query is three slots — ``color`` word, ``material`` word, ``noun`` phrase — plus the
taxonomy ``level`` the noun names (0 = fine leaf or one of its words, 1 = mid, 2 = top)
and the fine taxonomy it was derived from. The text is the non-empty slots joined by spaces,
e.g. ``"teal ceramic mugs"`` or ``"home and living"``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from components.marketplace.catalog import Catalog
from components.marketplace.config import ClickModelConfig, SessionConfig
from components.marketplace.util import categorical, join_words, take_strings
from components.marketplace.vocab import COLORS, MATERIALS

LEVEL_FINE, LEVEL_MID, LEVEL_TOP = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class QueryVocab:
    """Token table of query words: leaf phrases, taxonomy words, mid/top names, colors, materials."""

    words: pa.Array
    pseudo0: int
    per_tax: int
    mid0: int
    top0: int
    color0: int
    material0: int

    @classmethod
    def build(cls, catalog: Catalog) -> "QueryVocab":
        tax = catalog.taxonomy
        parts = [tax.leaf_words.tolist(), catalog.words.reshape(-1).tolist(), tax.mid_words.tolist(),
                 tax.top_words.tolist(), list(COLORS), list(MATERIALS)]
        starts = np.cumsum([0] + [len(p) for p in parts])
        return cls(pa.array(sum(parts, [])), int(starts[1]), catalog.words.shape[1], int(starts[2]),
                   int(starts[3]), int(starts[4]), int(starts[5]))


@dataclasses.dataclass
class Queries:
    """Structured queries, one per row (-1 = empty slot)."""

    level: np.ndarray
    fine: np.ndarray
    color: np.ndarray
    material: np.ndarray
    noun: np.ndarray

    def take(self, index: np.ndarray) -> "Queries":
        return Queries(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def assign(self, index: np.ndarray, other: "Queries") -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    @classmethod
    def empty(cls, n: int) -> "Queries":
        return cls(*(np.full(n, -1, dtype=np.int32) for _ in range(5)))

    @classmethod
    def concat(cls, parts: list["Queries"]) -> "Queries":
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def noun_token(vocab: QueryVocab, catalog: Catalog, level: np.ndarray, fine: np.ndarray, use_word: np.ndarray, word: np.ndarray) -> np.ndarray:
    """The noun token naming ``fine`` at ``level``: leaf phrase or a taxonomy word (fine), mid or top name."""
    tax = catalog.taxonomy
    fine_tok = np.where(use_word, vocab.pseudo0 + fine * vocab.per_tax + word, fine)
    return np.select([level == LEVEL_FINE, level == LEVEL_MID], [fine_tok, vocab.mid0 + tax.mid[fine]],
                     vocab.top0 + tax.top[fine]).astype(np.int32)


def new_queries(rng: np.random.Generator, cfg: SessionConfig, vocab: QueryVocab, catalog: Catalog,
                fine: np.ndarray, color: np.ndarray) -> Queries:
    """Fresh queries for intents (``fine``, ``color``): level, noun, optional color and material words."""
    n = len(fine)
    level = categorical(rng, np.asarray(cfg.query_level_weights), n).astype(np.int32)
    noun = noun_token(vocab, catalog, level, fine, rng.random(n) < cfg.query_pseudo_word_prob,
                      rng.integers(0, vocab.per_tax, n))
    q_color = np.where(rng.random(n) < cfg.query_color_prob, color, -1).astype(np.int32)
    tax_mat = catalog.taxonomy_materials[fine, rng.integers(0, catalog.taxonomy_materials.shape[1], n)]
    q_mat = np.where(rng.random(n) < cfg.query_material_prob, tax_mat, -1).astype(np.int32)
    return Queries(level, fine.astype(np.int32), q_color, q_mat, noun)


def refine_queries(rng: np.random.Generator, cfg: SessionConfig, vocab: QueryVocab, catalog: Catalog, q: Queries,
                   color: np.ndarray) -> Queries:
    """Follow-up queries: narrow the level, else add the color, else add a material, else swap the noun word."""
    n = len(q.level)
    narrow = q.level > LEVEL_FINE
    add_color = ~narrow & (q.color < 0)
    add_material = ~narrow & ~add_color & (q.material < 0)
    swap = ~narrow & ~add_color & ~add_material
    level = np.where(narrow, q.level - 1, q.level).astype(np.int32)
    word = rng.integers(0, vocab.per_tax, n)
    noun = np.where(narrow | swap, noun_token(vocab, catalog, level, q.fine, swap | (rng.random(n) < cfg.query_pseudo_word_prob), word), q.noun)
    tax_mat = catalog.taxonomy_materials[q.fine, rng.integers(0, catalog.taxonomy_materials.shape[1], n)]
    return Queries(
        level=level,
        fine=q.fine.copy(),
        color=np.where(add_color, color, q.color).astype(np.int32),
        material=np.where(add_material, tax_mat, q.material).astype(np.int32),
        noun=noun.astype(np.int32),
    )


def common_level(catalog: Catalog, fine_a: np.ndarray, fine_b: np.ndarray) -> np.ndarray:
    """Deepest shared taxonomy level: 0 same fine, 1 same mid, 2 same top, 3 none."""
    tax = catalog.taxonomy
    return np.select([fine_a == fine_b, tax.mid[fine_a] == tax.mid[fine_b], tax.top[fine_a] == tax.top[fine_b]],
                     [0, 1, 2], 3)


def relevance(cfg: ClickModelConfig, catalog: Catalog, q: Queries, listing: np.ndarray) -> np.ndarray:
    """True query-listing relevance: taxonomy part (by query level and shared level) + color + material parts.

    ``q`` fields and ``listing`` broadcast against each other (e.g. (n, 1) vs (n, K)).
    """
    lst = catalog.listings
    table = np.asarray(cfg.relevance_taxonomy)
    tax_part = table[q.level, common_level(catalog, q.fine, lst.fine[listing])]
    color_eq = lst.color[listing] == q.color
    mat_eq = lst.material[listing] == q.material
    color_part = np.where(q.color >= 0, np.where(color_eq, cfg.relevance_color[0], cfg.relevance_color[1]), 0.0)
    mat_part = np.where(q.material >= 0, np.where(mat_eq, cfg.relevance_material[0], cfg.relevance_material[1]), 0.0)
    return tax_part + color_part + mat_part


def query_text(vocab: QueryVocab, color: np.ndarray, material: np.ndarray, noun: np.ndarray) -> pa.Array:
    """Query strings from token columns (-1 = empty slot); each distinct query is built once."""
    n_words = len(vocab.words) + 1
    code = ((np.asarray(color, np.int64) + 1) * n_words + (np.asarray(material, np.int64) + 1)) * n_words + (np.asarray(noun, np.int64) + 1)
    unique, inverse = np.unique(code, return_inverse=True)
    u_noun = unique % n_words - 1
    u_material = (unique // n_words) % n_words - 1
    u_color = unique // (n_words * n_words) - 1
    c = np.where(u_color >= 0, vocab.color0 + u_color, -1)
    m = np.where(u_material >= 0, vocab.material0 + u_material, -1)
    texts = join_words(take_strings(vocab.words, c), take_strings(vocab.words, m), take_strings(vocab.words, u_noun))
    return texts.take(pa.array(inverse.reshape(-1)))
