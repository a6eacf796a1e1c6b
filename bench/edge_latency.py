"""Per-image scoring time of the shipped default int8 model: the edge agent's path (in an
edge-only install) against the server's LiteRT path, side by side in one run.

    python bench/edge_latency.py --edge-python /path/to/edge-venv/bin/python [--images DIR]

Each side runs in its own interpreter (the edge venv has no TensorFlow or database), loads
the model its own way (`marco_svc.edge.model_updates.open_model` / `nets.runner.open_runner`)
and scores the plate in batches of 8 (JPEG decode and preprocessing included), three
rounds, alternating sides; prints the medians and their ratio."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATE = ROOT.parent / "shared/data/formulatrix_90j8/90j8_2018-04-11_RI1000-0081-2drop"

PROBE = """
import json, sys, time
from pathlib import Path
from marco_svc.registry import default_shipped
from marco_svc.scoring.batch import Limits, score_batch
model = default_shipped()
if sys.argv[1] == "edge":
    from marco_svc.edge.model_updates import open_model
    runner = open_model(model.folder, "bench", "tflite-int8").runner
else:
    from marco_svc.nets.runner import open_runner
    runner = open_runner(model.card, model.folder, "tflite-int8")
items = [(p.name, p.read_bytes()) for p in sorted(Path(sys.argv[2]).glob("*.jpg"))]
score_batch(runner, items[:8], Limits(None))
times = []
for i in range(0, len(items), 8):
    batch = items[i:i + 8]
    started = time.perf_counter()
    scored, failed = score_batch(runner, batch, Limits(None))
    times.append((time.perf_counter() - started) * 1000 / len(batch))
print(json.dumps(times))
"""


def _side(python: str, which: str, images: Path) -> list[float]:
    done = subprocess.run(
        [python, "-c", PROBE, which, str(images)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",  # the installed package, not the checkout
    )
    return [float(t) for t in done.stdout.strip().splitlines()[-1].strip("[]").split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge-python", required=True, help="python of an edge-only install")
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--images", type=Path, default=PLATE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"edge": [], "server": []}
    for _ in range(args.rounds):
        times["edge"] += _side(args.edge_python, "edge", args.images)
        times["server"] += _side(args.server_python, "server", args.images)
    edge, server = statistics.median(times["edge"]), statistics.median(times["server"])
    print(
        f"edge_ms_per_image={edge:.2f} server_ms_per_image={server:.2f} "
        f"edge_vs_server={edge / server:.3f} batches={len(times['edge'])}"
    )


if __name__ == "__main__":
    main()
