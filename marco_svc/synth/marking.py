"""Everything the generator makes says so: a JPEG comment (COM and EXIF) and SYNTHETIC.txt."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

GENERATOR = "marco-svc synth 1"
MARK = "marco-svc synthetic"
NOTE_NAME = "SYNTHETIC.txt"
NOTE = f"""SYNTHETIC IMAGES - NOT REAL CRYSTALLIZATION EXPERIMENTS

Every image in this folder was rendered by the marco-svc synthetic drop generator
({GENERATOR}). No protein, plate or imager was involved. Each JPEG carries a
comment "{MARK}: label=...; seed=..." (JPEG COM marker and EXIF ImageDescription).
Use them for demos, tests and training, never as experimental results.
"""


def comment(label: str, seed: int, variant: str = "") -> str:
    """The text stored in every synthetic JPEG."""
    text = f"{MARK}: label={label}; seed={seed}"
    if variant:
        text += f"; variant={variant}"
    return f"{text}; generator={GENERATOR}"


def write_note(folder: Path, details: str = "") -> Path:
    """Put SYNTHETIC.txt in a folder (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / NOTE_NAME
    note.write_text(NOTE + (f"\n{details.strip()}\n" if details else ""), encoding="utf-8")
    return note


def synthetic_comment(data: bytes) -> str | None:
    """The generator's comment in JPEG bytes, or None for an image it did not make."""
    with Image.open(io.BytesIO(data)) as image:
        raw = image.info.get("comment", b"")
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if not text:
            text = str(image.getexif().get(0x010E, ""))
    return text if text.startswith(MARK) else None
