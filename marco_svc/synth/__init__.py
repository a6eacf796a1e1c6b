"""Synthetic crystallization-drop images: realistic renders of the ten Merck classes.

Everything made here is marked synthetic (JPEG comment, SYNTHETIC.txt notes, a
`synthetic` column in every CSV). Entry points:

- `render_drop(label, seed, size, background)` -> `Drop` (pixels + ground truth);
- `backgrounds_from_folder(path)` to draw contents into real clear-drop photos;
- `write_plate(root, layout=...)` for a whole plate in an imager's file layout;
- `write_dataset(root, n)` / `iter_drops(n)` for labelled training data.
"""

from marco_svc.synth.background import Background, backgrounds_from_folder, detect_drop
from marco_svc.synth.bad import BAD_DROP_VARIANTS
from marco_svc.synth.canvas import FULL_SIZE
from marco_svc.synth.dataset import SMALL_SIZE, iter_drops, write_dataset
from marco_svc.synth.marking import synthetic_comment
from marco_svc.synth.plates import DEMO_MIX, LAYOUTS, register_layout, write_plate
from marco_svc.synth.render import LABELS, VARIANTS, Drop, render_drop

__all__ = [
    "BAD_DROP_VARIANTS",
    "DEMO_MIX",
    "FULL_SIZE",
    "LABELS",
    "LAYOUTS",
    "SMALL_SIZE",
    "VARIANTS",
    "Background",
    "Drop",
    "backgrounds_from_folder",
    "detect_drop",
    "iter_drops",
    "register_layout",
    "render_drop",
    "synthetic_comment",
    "write_dataset",
    "write_plate",
]
