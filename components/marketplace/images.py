"""Listing images: a shape per top-level taxonomy, filled with the primary color, textured per material.

Rendering is vectorized over batches of listings with boolean masks on a coordinate grid;
Pillow encodes the PNGs (deterministic bytes: no timestamps, fixed compression level).
Per-listing jitter (center, size, color) comes from a stream keyed by the seed and the
batch's first listing number, so a listing's image never depends on the date range.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from components.marketplace.catalog import IMAGE_DIR, LISTING_ID_WIDTH, Catalog
from components.marketplace.config import ImageConfig
from components.marketplace.util import Stream, stream
from components.marketplace.vocab import COLORS, MATERIALS, SHAPES

PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
TEXTURES = tuple(MATERIALS.values())


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside ``shape`` given coordinates relative to its center in units of its half-size."""
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    au, av = np.abs(u), np.abs(v)
    masks = {
        "circle": lambda: r <= 1.0,
        "square": lambda: np.maximum(au, av) <= 0.85,
        "triangle": lambda: (v <= 0.75) & (au <= (v + 0.95) * 0.6),
        "diamond": lambda: au + av <= 1.0,
        "ring": lambda: (r >= 0.55) & (r <= 1.0),
        "cross": lambda: ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0)),
        "star": lambda: r <= 0.45 + 0.55 * ((1.0 + np.cos(5.0 * theta + np.pi / 2)) / 2.0) ** 2,
        "ellipse": lambda: u * u + (v / 0.55) ** 2 <= 1.0,
        "hexagon": lambda: (av <= 0.866) & (0.866 * au + 0.5 * av <= 0.866),
        "crescent": lambda: (r <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.75 ** 2),
    }
    return masks[shape]()


def texture_mask(texture: str, px: np.ndarray, py: np.ndarray, r: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Pixels darkened by a material's texture (covers at most about a third of the shape).

    ``noise`` is standard normal per pixel (the speckle texture thresholds it at its 25% quantile).
    """
    masks = {
        "plain": lambda: np.zeros(noise.shape, dtype=bool),
        "hstripes": lambda: (py % 6) < 2,
        "vstripes": lambda: (px % 6) < 2,
        "diagonal": lambda: ((px + py) % 7) < 2,
        "dots": lambda: ((px % 6) - 2.5) ** 2 + ((py % 6) - 2.5) ** 2 < 2.5,
        "checker": lambda: ((px // 3) % 2 == 0) & ((py // 3) % 2 == 0),
        "grid": lambda: (px % 6 == 0) | (py % 6 == 0),
        "rings": lambda: np.floor(r * 8.0) % 3 == 0,
        "waves": lambda: ((py + 2.0 * np.sin(px / 3.0)) % 6) < 2,
        "speckle": lambda: noise < -0.674,
    }
    return masks[texture]()


def render(cfg: ImageConfig, rng: np.random.Generator, top: np.ndarray, color: np.ndarray, material: np.ndarray) -> np.ndarray:
    """(n, size, size, 3) uint8 images of listings with the given top level, color and material."""
    n, size, f32 = len(top), cfg.size, np.float32
    half = size / 2.0
    py, px = np.mgrid[0:size, 0:size].astype(f32)
    y, x = (py + 0.5 - half) / half, (px + 0.5 - half) / half
    center = rng.uniform(-cfg.center_jitter, cfg.center_jitter, (n, 2)).astype(f32)
    scale = rng.uniform(cfg.shape_scale_min, cfg.shape_scale_max, n).astype(f32)
    u = (x[None] - center[:, 0, None, None]) / scale[:, None, None]
    v = (y[None] - center[:, 1, None, None]) / scale[:, None, None]
    noise = rng.standard_normal((n, size, size), dtype=f32)
    inside = np.zeros((n, size, size), dtype=bool)
    textured = np.zeros((n, size, size), dtype=bool)
    for s, shape in enumerate(SHAPES):
        sel = np.flatnonzero(top % len(SHAPES) == s)
        if len(sel):
            inside[sel] = shape_mask(shape, u[sel], v[sel])
    for m, texture in enumerate(TEXTURES):
        sel = np.flatnonzero(material == m)
        if len(sel):
            r = np.sqrt(u[sel] ** 2 + v[sel] ** 2) if texture == "rings" else None
            textured[sel] = texture_mask(texture, px, py, r, noise[sel])
    fill = (PALETTE[color] + rng.normal(0.0, cfg.color_jitter, (n, 3))).astype(f32)
    shade = np.where(textured, f32(1.0 - cfg.texture_strength), f32(1.0))
    foreground = fill[:, None, None, :] * shade[..., None] + (cfg.pixel_noise * noise)[..., None]
    background = np.asarray(cfg.background_rgb, dtype=f32) + (cfg.background_noise * noise)[..., None]
    pixels = np.where(inside[..., None], foreground, background)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _save_png(path: str, image: np.ndarray, compress_level: int) -> None:
    """Encodes one image and moves it into place atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    Image.fromarray(image).save(tmp, format="PNG", compress_level=compress_level)
    os.replace(tmp, path)


def write_images(cfg: ImageConfig, catalog: Catalog, listings: np.ndarray, root: str, seed: int) -> int:
    """Renders and writes ``raw/images/<listing_id>.png`` for the given listing numbers; returns how many.

    Batches are rendered on the calling thread while ``cfg.threads`` workers encode the previous
    batch (Pillow's encoder releases the GIL); each file's bytes depend only on its listing.
    """
    if not cfg.enabled or len(listings) == 0:
        return 0
    out_dir = os.path.join(root, IMAGE_DIR)
    os.makedirs(out_dir, exist_ok=True)
    lst = catalog.listings
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=cfg.threads) as pool:
        for b in range(0, len(listings), cfg.batch):
            batch = listings[b : b + cfg.batch]
            rng = stream(seed, Stream.IMAGES, int(batch[0]))
            pixels = render(cfg, rng, catalog.taxonomy.top[lst.fine[batch]], lst.color[batch].astype(np.int64),
                            lst.material[batch].astype(np.int64))
            for future in pending:
                future.result()
            pending = [
                pool.submit(_save_png, os.path.join(out_dir, f"L{number:0{LISTING_ID_WIDTH}d}.png"), image,
                            cfg.png_compress_level)
                for number, image in zip(batch, pixels)
            ]
        for future in pending:
            future.result()
    return len(listings)
