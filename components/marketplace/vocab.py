"""The fixed world of the marketplace: taxonomy tree, colors, materials, generic words.

These are data, not knobs: the taxonomy tree has 10 top levels, 30 mid levels and 100
leaves (``taxonomy_path`` = ``top.mid.leaf``); the config chooses how many leaves are used.
Shapes (per top level) and textures (per material) are what the images draw.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# top -> mid -> leaves. Leaves are the "fine" taxonomies listings belong to.
TAXONOMY_TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "home_and_living": {
        "lighting": ("lamps", "pendants", "candles", "lanterns"),
        "decor": ("vases", "mirrors", "clocks", "wall_art"),
        "kitchen": ("mugs", "bowls", "cutting_boards", "teapots"),
    },
    "jewelry": {
        "necklaces": ("pendant_necklaces", "chokers", "lockets", "chains"),
        "rings": ("engagement_rings", "signet_rings", "stacking_rings"),
        "earrings": ("studs", "hoops", "dangles"),
    },
    "clothing": {
        "womens": ("dresses", "skirts", "blouses", "cardigans"),
        "mens": ("shirts", "jackets", "hoodies"),
        "kids": ("onesies", "rompers", "pajamas"),
    },
    "accessories": {
        "bags": ("totes", "backpacks", "clutches", "wallets"),
        "hats": ("beanies", "fedoras", "sun_hats"),
        "scarves": ("shawls", "bandanas", "wraps"),
    },
    "art_and_collectibles": {
        "prints": ("posters", "giclee_prints", "linocuts", "art_cards"),
        "painting": ("watercolors", "oil_paintings", "acrylics"),
        "sculpture": ("figurines", "busts", "reliefs"),
    },
    "craft_supplies": {
        "yarn": ("wool_yarn", "cotton_yarn", "mohair", "roving"),
        "beads": ("seed_beads", "gemstone_beads", "glass_beads"),
        "fabric": ("quilting_fabric", "felt", "linen_fabric"),
    },
    "toys_and_games": {
        "toys": ("plush_toys", "wooden_toys", "dolls", "puppets"),
        "games": ("board_games", "puzzles", "card_games"),
        "baby_toys": ("rattles", "teethers", "mobiles"),
    },
    "weddings": {
        "decorations": ("centerpieces", "garlands", "cake_toppers"),
        "invitations": ("save_the_dates", "invitation_cards", "place_cards"),
        "gifts": ("bridesmaid_gifts", "groomsmen_gifts", "guest_favors"),
    },
    "pet_supplies": {
        "dogs": ("dog_collars", "dog_beds", "dog_toys"),
        "cats": ("cat_trees", "cat_toys", "cat_beds", "cat_collars"),
        "pet_decor": ("pet_portraits", "pet_memorials", "feeding_mats"),
    },
    "bath_and_beauty": {
        "skincare": ("soaps", "face_masks", "lotions"),
        "fragrance": ("perfumes", "bath_bombs", "essential_oils"),
        "hair": ("hair_clips", "scrunchies", "combs"),
    },
}

# name -> RGB. The image fill and the listing's primary_color.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35),
    "orange": (240, 130, 20),
    "yellow": (245, 215, 40),
    "green": (45, 150, 60),
    "teal": (20, 140, 140),
    "blue": (35, 70, 200),
    "purple": (125, 50, 170),
    "pink": (240, 120, 180),
    "brown": (120, 70, 30),
    "black": (25, 25, 25),
    "white": (252, 252, 252),
    "gray": (130, 130, 135),
}

# material -> texture drawn on the image.
MATERIALS: dict[str, str] = {
    "cotton": "plain",
    "wool": "hstripes",
    "linen": "vstripes",
    "leather": "diagonal",
    "wood": "waves",
    "ceramic": "dots",
    "glass": "rings",
    "metal": "grid",
    "silver": "checker",
    "paper": "speckle",
}

# One shape per top level (in TAXONOMY_TREE order).
SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "ring", "cross", "star", "ellipse", "hexagon", "crescent",
)

ADJECTIVES: tuple[str, ...] = (
    "handmade", "vintage", "custom", "personalized", "rustic", "minimalist", "boho", "modern",
    "cute", "unique", "gift", "cozy", "elegant", "classic", "artisan", "natural",
)

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "da", "zu", "fi", "ro", "ma", "el", "an", "or", "is")


@dataclasses.dataclass(frozen=True)
class Taxonomy:
    """The fine taxonomies in use, with their mid/top parents and display words (arrays indexed by fine id)."""

    ids: np.ndarray  # taxonomy_id strings, e.g. "t017"
    paths: np.ndarray  # taxonomy_path strings, e.g. "home_and_living.lighting.lamps"
    leaf_words: np.ndarray  # "cutting boards"
    mid: np.ndarray  # int, mid-level index per fine taxonomy (into mid_words)
    top: np.ndarray  # int, top-level index per fine taxonomy (into top_words)
    mid_words: np.ndarray
    top_words: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def build_taxonomy(n_fine: int) -> Taxonomy:
    """The first ``n_fine`` leaves, interleaved across top levels so every top level is used."""
    leaves = []  # (rank within top, top index, global leaf index, top, mid, leaf)
    mid_names: list[str] = []
    global_index = 0
    for t, (top, mids) in enumerate(TAXONOMY_TREE.items()):
        rank = 0
        for mid, leaf_names in mids.items():
            mid_names.append(mid)
            for leaf in leaf_names:
                leaves.append((rank, t, global_index, top, len(mid_names) - 1, leaf))
                rank += 1
                global_index += 1
    leaves.sort(key=lambda r: (r[0], r[1]))
    chosen = sorted(leaves[:n_fine], key=lambda r: r[2])
    tops = list(TAXONOMY_TREE)
    return Taxonomy(
        ids=np.array([f"t{r[2]:03d}" for r in chosen], dtype=object),
        paths=np.array([f"{r[3]}.{mid_names[r[4]]}.{r[5]}" for r in chosen], dtype=object),
        leaf_words=np.array([r[5].replace("_", " ") for r in chosen], dtype=object),
        mid=np.array([r[4] for r in chosen], dtype=np.int32),
        top=np.array([r[1] for r in chosen], dtype=np.int32),
        mid_words=np.array([m.replace("_", " ") for m in mid_names], dtype=object),
        top_words=np.array([t.replace("_", " ") for t in tops], dtype=object),
    )


def pseudo_words(rng: np.random.Generator, n_taxonomies: int, per_taxonomy: int) -> np.ndarray:
    """Distinct made-up product words, ``per_taxonomy`` for each fine taxonomy: shape (n_taxonomies, per_taxonomy)."""
    reserved = {w for w in ADJECTIVES} | set(COLORS) | set(MATERIALS)
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < n_taxonomies * per_taxonomy:
        n_syl = rng.integers(2, 4, size=64)
        picks = rng.integers(0, len(_SYLLABLES), size=(64, 3))
        for k, row in zip(n_syl, picks):
            word = "".join(_SYLLABLES[i] for i in row[:k])
            if word not in seen and word not in reserved:
                seen.add(word)
                words.append(word)
    return np.array(words[: n_taxonomies * per_taxonomy], dtype=object).reshape(n_taxonomies, per_taxonomy)
