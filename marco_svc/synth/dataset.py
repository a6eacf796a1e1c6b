"""Labelled synthetic training sets: images plus a CSV manifest, or drops on the fly.

The manifest (`manifest.csv`) has one row per image: `path,label,group` first
(path relative to the manifest, ten-way label, group = the synthetic plate the
image belongs to, for group-aware splits), then the ground truth columns and
`synthetic` (always 1).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc.labels import MERCK10_LABELS
from marco_svc.synth.background import Background
from marco_svc.synth.looks import DEFAULT_LOOK, LOOKS
from marco_svc.synth.marking import GENERATOR, write_note
from marco_svc.synth.plates import image_seed, normalise_mix
from marco_svc.synth.render import Drop, render_drop

SMALL_SIZE: tuple[int, int] = (256, 306)  # (height, width): the full frame's aspect, 1/4 scale
MANIFEST_COLUMNS = (
    "path",
    "label",
    "group",
    "label4",
    "variant",
    "seed",
    "height",
    "width",
    "drop_x",
    "drop_y",
    "drop_radius",
    "crystal_boxes",
    "background",
    "look",
    "synthetic",
)


@dataclass(frozen=True)
class Item:
    """One planned image: its position, label, render seed, group and background index."""

    index: int
    label: str
    seed: int
    group: str
    background: int | None = None
    look: str = DEFAULT_LOOK


def plan(
    n: int,
    seed: int = 0,
    class_mix: Mapping[str, float] | None = None,
    group_size: int = 96,
    backgrounds: int = 0,
    background_share: float = 0.5,
    looks: Mapping[str, float] | None = None,
) -> list[Item]:
    """n items; balanced over the ten classes unless a mix is given; deterministic.

    looks: imager look -> share (looks.LOOKS); all in the default look when None. Looks
    are drawn from their own stream, so adding them changes no label or seed.
    """
    if n < 0 or group_size < 1:
        raise ValueError("n must be >= 0 and group_size >= 1")
    rng = np.random.default_rng([seed, 0xDA7A])
    if class_mix is None:
        labels = [MERCK10_LABELS[i % len(MERCK10_LABELS)] for i in range(n)]
        order = rng.permutation(n)
        labels = [labels[i] for i in order]
    else:
        mix = normalise_mix(class_mix)
        names = list(mix)
        labels = [names[i] for i in rng.choice(len(names), size=n, p=list(mix.values()))]
    use_bg = rng.uniform(0, 1, n) < background_share if backgrounds else np.zeros(n, bool)
    picks = rng.integers(0, max(backgrounds, 1), n)
    chosen = _looks(n, seed, looks)
    return [
        Item(
            index=i,
            label=label,
            seed=image_seed(seed, i),
            group=f"synth{seed}-{i // group_size:04d}",
            background=int(picks[i]) if use_bg[i] else None,
            look=DEFAULT_LOOK if use_bg[i] else chosen[i],
        )
        for i, label in enumerate(labels)
    ]


def _looks(n: int, seed: int, looks: Mapping[str, float] | None) -> list[str]:
    if not looks:
        return [DEFAULT_LOOK] * n
    unknown = sorted(set(looks) - set(LOOKS))
    if unknown:
        raise ValueError(f"unknown imager looks {unknown} (known: {', '.join(LOOKS)})")
    names = [name for name, share in looks.items() if share > 0]
    shares = np.asarray([looks[name] for name in names], dtype=np.float64)
    if not names or shares.sum() <= 0:
        raise ValueError("a look mix needs at least one positive share")
    rng = np.random.default_rng([seed, 0x100C])
    return [names[i] for i in rng.choice(len(names), size=n, p=shares / shares.sum())]


def iter_drops(
    n: int,
    seed: int = 0,
    size: Sequence[int] = SMALL_SIZE,
    class_mix: Mapping[str, float] | None = None,
    backgrounds: Sequence[Background] = (),
    background_share: float = 0.5,
    looks: Mapping[str, float] | None = None,
) -> Iterator[tuple[Item, Drop]]:
    """Render the plan one drop at a time (for training without files)."""
    for item in plan(
        n,
        seed,
        class_mix,
        backgrounds=len(backgrounds),
        background_share=background_share,
        looks=looks,
    ):
        yield item, _render(item, size, backgrounds)


def _render(item: Item, size: Sequence[int], backgrounds: Sequence[Background]) -> Drop:
    backdrop = backgrounds[item.background] if item.background is not None else None
    return render_drop(item.label, item.seed, size, backdrop, look=item.look)


_WORKER_BACKGROUNDS: Sequence[Background] = ()


def _init_worker(backgrounds: Sequence[Background]) -> None:
    global _WORKER_BACKGROUNDS
    _WORKER_BACKGROUNDS = backgrounds


def _write_item(item: Item, size: Sequence[int], root: Path) -> dict[str, Any]:
    drop = _render(item, size, _WORKER_BACKGROUNDS)
    relative = Path(item.group) / f"{item.index:06d}.jpg"
    (root / relative).write_bytes(drop.to_jpeg())
    truth = drop.truth()
    truth["crystal_boxes"] = json.dumps(truth["crystal_boxes"])
    background = _WORKER_BACKGROUNDS[item.background].name if item.background is not None else ""
    return {
        "path": relative.as_posix(),
        "group": item.group,
        "background": background,
        "synthetic": 1,
        **truth,
    }


def write_dataset(
    root: str | Path,
    n: int,
    seed: int = 0,
    size: Sequence[int] = SMALL_SIZE,
    class_mix: Mapping[str, float] | None = None,
    group_size: int = 96,
    backgrounds: Sequence[Background] = (),
    background_share: float = 0.5,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    looks: Mapping[str, float] | None = None,
) -> Path:
    """Write n labelled images under root and root/manifest.csv; returns the manifest path.

    Deterministic from `seed` whatever `jobs` is. Balanced over the ten classes by
    default. With `backgrounds`, about `background_share` of the images are drawn on
    them (do not pass images you will evaluate on). `looks` mixes imager looks (plan).
    """
    root = Path(root)
    items = plan(n, seed, class_mix, group_size, len(backgrounds), background_share, looks)
    for group in sorted({item.group for item in items}):
        write_note(root / group, f"dataset seed {seed}, {GENERATOR}")
    write_note(root, f"dataset seed {seed}, {n} images, {GENERATOR}")
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for done, row in enumerate(_rows(items, size, root, backgrounds, jobs), start=1):
            writer.writerow(row)
            if progress is not None:
                progress(done, n)
    return manifest


def _rows(
    items: Sequence[Item],
    size: Sequence[int],
    root: Path,
    backgrounds: Sequence[Background],
    jobs: int,
) -> Iterator[dict[str, Any]]:
    if jobs <= 1:
        _init_worker(backgrounds)
        try:
            for item in items:
                yield _write_item(item, size, root)
        finally:
            _init_worker(())
        return
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(backgrounds,)) as pool:
        yield from pool.map(
            _write_item, items, [size] * len(items), [root] * len(items), chunksize=8
        )
