"""Rendering speed of the synthetic drop generator, full size and small, side by side.

    python bench/synth_speed.py [IMAGES_PER_SIZE]

Renders the same label/seed sequence (cycling through the ten classes) at each size,
in one process on one core, and prints images per second and the ratio to full size.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marco_svc.synth.render import LABELS, render_drop

SIZES = {"full 1024x1224": (1024, 1224), "half 512x612": (512, 612), "small 256x306": (256, 306)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    render_drop("clear", 0, (64, 77))  # warm up imports and caches
    rates = {}
    for name, size in SIZES.items():
        start = time.perf_counter()
        for i in range(n):
            render_drop(LABELS[i % len(LABELS)], i, size)
        rates[name] = n / (time.perf_counter() - start)
    full = rates["full 1024x1224"]
    for name, rate in rates.items():
        print(f"{name:<16} {rate:7.1f} images/s   x{rate / full:5.1f} vs full size")


if __name__ == "__main__":
    main()
