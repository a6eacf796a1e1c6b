"""Where the default model's SmoothGrad heatmaps fall on generated one-crystal drops.

For each ten-way crystal class, `--seeds` drops with exactly one crystal (needles & plates:
one needle or plate) are rendered at the imager's full frame, scored by the shipped
default model (Keras) under the default crystal rule, and given a SmoothGrad map (n=50,
sigma 15%) of the Crystals class; the figure is the share of the map's mass inside the
crystal's bounding box grown by half its size on every side (at least 6 input pixels),
as in tests/test_default_model.py. Prints per class the hit rate and the median and
minimum share, and a last line of key=value pairs.

    python bench/heatmap_focus.py [--seeds 6] [--model NAME[:VERSION] | FOLDER]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marco_svc.nets import quiet_tensorflow

FIRST_SEED = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="drops per crystal class")
    parser.add_argument("--model", default="", help="a model or folder (default: shipped)")
    args = parser.parse_args()
    quiet_tensorflow()
    from marco_svc import registry
    from marco_svc.config import load_settings
    from marco_svc.labels import CRYSTAL_CLASSES_10, CRYSTALS, MARCO4
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.nets.runner import open_runner
    from marco_svc.scoring.heatmaps import keras_model
    from marco_svc.scoring.rules import CrystalRule, decide
    from marco_svc.scoring.saliency import SmoothGradParams, grown_box, mass_inside, smoothgrad
    from marco_svc.synth.render import render_drop

    settings = load_settings()
    model = registry.find(settings, args.model) if args.model else registry.default_shipped()
    if model is None:
        raise SystemExit("no shipped default model")
    runner, network = open_runner(model.card, model.folder, "keras"), keras_model(model)
    prep, rule = from_spec(model.card.preprocessing), CrystalRule.parse("threshold:0.5")
    crystals = model.card.heads[MARCO4].index(CRYSTALS)
    print(f"{model.ref}: one-crystal drops, SmoothGrad n=50 of {CRYSTALS}, rule {rule}")
    print(f"{'class':<18} {'hits':>6} {'median share':>13} {'min share':>10} {'>= 0.5':>7}")
    every: list[float] = []
    hits = 0
    for label in CRYSTAL_CLASSES_10:
        shares, hit = [], 0
        for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):
            drop = render_drop(label, seed, crystals=1)
            x = prep.np_from_bytes(drop.jpeg)
            probabilities = runner.label_probabilities(runner.predict(x[None]))[0]
            hit += decide(probabilities, rule, model.card.operating_points).hit
            height, width = drop.image.shape[:2]
            box = grown_box(prep.input_box(drop.crystal_boxes[0], height, width), prep.size)
            heatmap = smoothgrad(network, x, MARCO4, crystals, SmoothGradParams(n=50))
            shares.append(mass_inside(heatmap, box))
        hits += hit
        every += shares
        above = sum(s >= 0.5 for s in shares)
        print(
            f"{label:<18} {hit:>3}/{args.seeds:<2} {statistics.median(shares):13.2f} "
            f"{min(shares):10.2f} {above:>4}/{args.seeds}"
        )
    print(
        f"hit_rate={hits / len(every):.2f} median_share={statistics.median(every):.2f} "
        f"share_at_least_half={sum(s >= 0.5 for s in every) / len(every):.2f}"
    )


if __name__ == "__main__":
    main()
