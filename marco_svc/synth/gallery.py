"""A contact sheet of every class (and bad-drop variant), optionally beside real drops."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from marco_svc.synth.bad import BAD_DROP_VARIANTS
from marco_svc.synth.render import LABELS, render_drop

LABEL_WIDTH = 150


def gallery_rows() -> list[tuple[str, str | None]]:
    """(label, variant) per row: the nine other classes, then each bad-drop variant."""
    rows: list[tuple[str, str | None]] = [(label, None) for label in LABELS if label != "bad drop"]
    return rows + [("bad drop", variant) for variant in BAD_DROP_VARIANTS]


def _caption(text: str, height: int) -> np.ndarray:
    tile = np.full((height, LABEL_WIDTH, 3), 255, np.uint8)
    for k, line in enumerate(text.split("\n")):
        cv2.putText(
            tile, line, (6, 24 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return tile


def contact_sheet(
    seeds: Sequence[int] = (0, 1, 2, 3),
    tile: tuple[int, int] = (160, 191),
    real: Sequence[Path] = (),
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """RGB sheet: one row per class/variant, one column per seed; first row real images.

    Drops are rendered at `size` (default: the tile size, which is how fast rendering
    is meant to be used) and resized to the tile.
    """
    h, w = tile
    render_size = size or tile
    rows = []
    if real:
        tiles = [_fit(np.asarray(Image.open(p).convert("RGB")), tile) for p in real[: len(seeds)]]
        tiles += [np.full((h, w, 3), 255, np.uint8)] * (len(seeds) - len(tiles))
        rows.append(np.hstack([_caption("REAL plate\n(90j8, clear)", h), *tiles]))
    for label, variant in gallery_rows():
        tiles = [
            _fit(render_drop(label, seed, render_size, variant=variant).image, tile)
            for seed in seeds
        ]
        caption = f"{label}\n{variant}" if variant else label
        rows.append(np.hstack([_caption(caption, h), *tiles]))
    return np.vstack(rows)


def _fit(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tile:
        return image
    return cv2.resize(image, (tile[1], tile[0]), interpolation=cv2.INTER_AREA)


def save_sheet(sheet: np.ndarray, path: str | Path, colours: int | None = None) -> Path:
    """Write the sheet as PNG; `colours` quantises it to a palette for a small file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(sheet)
    if colours:
        image = image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    return path
