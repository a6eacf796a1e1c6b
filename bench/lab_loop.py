"""The lab-correction loop, measured: a new lab's corrections fine-tune the active model.

A "new lab" images its drops in an imager look the base model never saw (`--look`, by
default `hanging`: a hanging drop over a cover slip; the shipped default was trained on the
`formulatrix` look alone, and the presets' look mixes leave `hanging` out). In a fresh data
folder (MARCO_DATA_DIR in a temporary folder), with the project's own functions throughout:

1. the lab's plates (`--labelled` drops, 96 wells x 3 drops, Formulatrix layout) and its
   held-out drops (a labelled set from another seed, checked to share no image with the
   plates) are rendered in the lab's look and class mix (`--mix`);
2. the base model (`--base`: the shipped default; `tiny`, a small network trained here on
   the default look, weak and slow on a CPU; or NAME[:VERSION]) is activated, as
   `marco-svc models activate` does;
3. the plates are ingested as `marco-svc ingest` does (imager adapters, `ingest_paths`) and
   scored with the active model (the scoring engine);
4. a scientist labels every drop of the plates (HumanScores through `human_scores.put`,
   behind the web page's and the API's PUT; `--scale`, by default the page's marco4),
   counting how many labels correct the model's four-way call;
5. `labels export` writes them as a training manifest (`export_human_labels`);
6. the `finetune` preset fine-tunes the active model on it (`train`, init = the active
   model; `--epochs`, `--freeze-epochs` override the preset) and the new version is
   registered (`registry.register`), as `marco-svc train` does;
7. `marco-svc models promote` (`train.promotion.promote`) evaluates both models on the
   held-out drops and activates the candidate only if it is better.

Prints a before/after table (four-way accuracy, crystal recall, per class), the decision,
the fine-tune's course, the seconds per step, and last one JSON line.

    python bench/lab_loop.py [--base default|tiny|NAME[:VERSION]] [--look hanging]
        [--labelled 200] [--held-out 300] [--mix screening|plate] [--scale marco4|merck10]
        [--epochs N] [--freeze-epochs N] [--no-export] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marco_svc.nets import quiet_tensorflow

SCIENTIST = "lab-scientist"
BARCODE = "LAB{:05d}"
WELLS, DROPS = 96, 3  # one 96-well plate holds 288 drops
Say = Callable[[str], None]


@dataclass
class LoopOptions:
    """What the loop runs on; the defaults are the bench's."""

    base: str = "default"  # "default" (shipped), "tiny", or NAME[:VERSION]
    look: str = "hanging"
    labelled: int = 200
    held_out: int = 300
    size: tuple[int, int] = (256, 306)  # the shipped default model's training renders
    mix: str = "screening"  # "screening" (default.toml's class mix) or "plate" (DEMO_MIX)
    scale: str = "marco4"  # the web page's default scale; merck10 also trains the ten-way head
    epochs: int | None = None  # None: the preset's
    freeze_epochs: int | None = None  # epochs with the trunk frozen; None: the preset's
    export: bool = True  # the preset's int8 export
    seed: int = 0
    jobs: int = 2
    tiny_images: int = 600
    tiny_epochs: int = 4
    work: Path | None = None  # None: a temporary folder, removed at the end


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)


def class_mix(name: str) -> dict[str, float]:
    """A lab's class proportions: the default model's screening mix or a demo plate's."""
    from marco_svc.registry import SHIPPED_DIR
    from marco_svc.synth.plates import DEMO_MIX
    from marco_svc.train.config import load_config

    if name == "plate":
        return dict(DEMO_MIX)
    return dict(load_config(SHIPPED_DIR / "presets" / "default.toml").data.synthetic.mix)


def _render(job: tuple[str, int, tuple[int, int], str]) -> bytes:
    from marco_svc.synth.render import render_drop

    label, seed, size, look = job
    return render_drop(label, seed, size, look=look).to_jpeg()


def write_lab_plates(root: Path, options: LoopOptions, mix: dict[str, float]) -> dict[Path, str]:
    """`options.labelled` drops on 96-well plates (3 drops a well) in the Formulatrix layout,
    rendered in the lab's look; {image path: ten-way truth}. A truth CSV sits beside them."""
    import numpy as np

    from imager_adapters.wells import plate_type
    from marco_svc.synth.marking import GENERATOR, write_note
    from marco_svc.synth.plates import PlateSpec, image_seed, layout_named, normalise_mix

    n, seed, look = options.labelled, options.seed, options.look
    layout, geometry = layout_named("formulatrix-flat"), plate_type(WELLS, DROPS)
    shares = normalise_mix(mix)
    labels = list(shares)
    picks = np.random.default_rng([seed, 0x1AB]).choice(len(labels), n, p=list(shares.values()))
    places: list[tuple[Path, str, int]] = []
    per_plate = WELLS * DROPS
    for plate in range(math.ceil(n / per_plate)):
        spec = PlateSpec(
            barcode=BARCODE.format(seed * 100 + plate + 1),
            geometry=geometry,
            inspected_at=datetime(2024, 6, 3) + timedelta(days=plate),
            imager="RI1000-LAB",
            plate_id=2000 + plate,
            batch_id=9000 + plate,
        )
        for index in range(min(per_plate, n - plate * per_plate)):
            well = geometry.well_from_number(index // DROPS + 1)
            path = root / layout.path(spec, well, index % DROPS + 1, index)
            places.append((path, labels[int(picks[len(places)])], image_seed(seed, len(places))))
    work = [(label, drop_seed, options.size, look) for _, label, drop_seed in places]
    if options.jobs > 1:
        with ProcessPoolExecutor(options.jobs) as pool:
            jpegs = list(pool.map(_render, work, chunksize=8))
    else:
        jpegs = [_render(job) for job in work]
    for (path, _, _), jpeg in zip(places, jpegs, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg)
    for folder in {root, *(path.parent for path, _, _ in places)}:
        write_note(folder, f"lab-loop plates, look {look}, seed {seed}, {GENERATOR}")
    with (root / "truth.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "look"])
        writer.writerows([str(path), label, look] for path, label, _ in places)
    return {path.resolve(): label for path, label, _ in places}


def tiny_base(settings: Any, db: Any, options: LoopOptions, say: Say) -> Any:
    """A small compact two-head model trained here on default-look drops, registered."""
    from marco_svc import registry
    from marco_svc.train.config import parse_config
    from marco_svc.train.trainer import train

    values = {
        "model": {"architecture": "compact-two-head", "name": "lab-base-tiny", "version": "1"},
        "data": {
            "train": "synthetic",
            "validation_share": 0.1,
            "test_share": 0.1,
            "synthetic": {
                "images": options.tiny_images,
                "seed": 2026,
                "size": list(options.size),
                "group_size": 8,
                "jobs": options.jobs,
                "mix": class_mix(options.mix),
            },
        },
        "recipe": {"name": "default", "batch_size": 32, "epochs": options.tiny_epochs},
        "export": {"formats": []},
    }
    folder = settings.resolved_data_dir / "training" / "lab-base-tiny" / "1"
    train(parse_config(values, "tiny base"), settings, folder, progress=say, verbose=0)
    return registry.register(settings, folder, db=db)


def base_model(settings: Any, db: Any, options: LoopOptions, say: Say) -> Any:
    from marco_svc import registry

    if options.base == "tiny":
        return tiny_base(settings, db, options, say)
    if options.base == "default":
        model = registry.default_shipped()
        if model is None:
            raise SystemExit("no shipped default model")
        return model
    return registry.find(settings, options.base)


def activate(db: Any, model: Any) -> str:
    """What `marco-svc models activate REF` does."""
    from marco_svc import registry

    registry.upsert_version(db, model)
    name, version = registry.activate(db, model.ref)
    return f"{name}:{version}"


def ingest_and_score(runtime: Any, root: Path) -> tuple[dict[Path, int], int]:
    """`marco-svc ingest ROOT`, then the scoring engine over what is pending."""
    from marco_svc.adapters import adapters_for
    from marco_svc.ingest_files import ingest_paths
    from marco_svc.scoring.engine import ScoringEngine

    counts, results = ingest_paths(runtime, [root], adapters_for(runtime.settings))
    if counts["failed"] or not counts["created"]:
        raise SystemExit(f"ingest of {root} failed: {dict(counts)}")
    engine = ScoringEngine(runtime, batch_size=runtime.settings.scoring_batch_size)
    return {r.path.resolve(): r.image_id for r in results}, engine.run_pending()


def four_way_calls(db: Any, image_ids: list[int]) -> dict[int, str]:
    """The active model's four-way call of each image (its stored score)."""
    from sqlalchemy import select

    from marco_svc.db.models import Score
    from marco_svc.labels import to_four

    with db.session() as session:
        rows = session.execute(
            select(Score.image_id, Score.probabilities).where(Score.image_id.in_(image_ids))
        ).all()
    calls = {}
    for image_id, probabilities in rows:
        four = to_four(probabilities)
        calls[image_id] = max(four, key=four.__getitem__)
    return calls


def record_labels(db: Any, truth: dict[int, str], scale: str) -> dict[str, int]:
    """The scientist's labels as HumanScores; how many differ from the model's call."""
    from marco_svc import human_scores
    from marco_svc.labels import TEN_TO_FOUR

    calls = four_way_calls(db, list(truth))
    corrected = 0
    for image_id, label in truth.items():
        given = TEN_TO_FOUR[label] if scale == "marco4" else label
        human_scores.put(db, image_id, given, scale, SCIENTIST, "lab-loop")
        corrected += calls.get(image_id) != TEN_TO_FOUR[label]
    return {"labelled": len(truth), "corrected": corrected, "confirmed": len(truth) - corrected}


def fine_tune(
    settings: Any, db: Any, labels_csv: Path, init: str, options: LoopOptions
) -> tuple[Any, str]:
    """`marco-svc train finetune` on the exported labels (init = the active model), then
    registered; and what became of the preset's export. An export refused by its agreement
    check stops `marco-svc train` after the model, its evaluation and calibration are saved:
    the loop goes on with that Keras model and says so."""
    import keras

    from marco_svc import registry
    from marco_svc.train.config import load_config
    from marco_svc.train.export import ExportRefused
    from marco_svc.train.trainer import train

    recipe = {"epochs": options.epochs, "freeze_epochs": options.freeze_epochs}
    overrides: dict[str, dict[str, Any]] = {
        "model": {"init": init},
        "data": {"train": str(labels_csv)},
        "recipe": {key: value for key, value in recipe.items() if value is not None},
        "export": {} if options.export else {"formats": []},
    }
    config = load_config(registry.SHIPPED_DIR / "presets" / "finetune.toml", overrides)
    folder = settings.resolved_data_dir / "training" / config.model.name / config.model.version
    keras.utils.set_random_seed(options.seed)  # the trainer seeds fresh networks only
    try:
        train(config, settings, folder, verbose=0)
        export = ", ".join(config.export.formats) or "none"
    except ExportRefused as exc:
        export = f"refused: {exc}"
    return registry.register(settings, folder, db=db), export


def sha256s(paths: list[Path]) -> set[str]:
    return {hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def held_out_set(work: Path, options: LoopOptions, mix: dict[str, float]) -> Path:
    """The lab's held-out drops, a labelled manifest rendered from a seed of their own."""
    from marco_svc.synth.dataset import write_dataset

    return write_dataset(
        work / "lab-held-out",
        options.held_out,
        seed=options.seed + 7919,
        size=options.size,
        class_mix=mix,
        jobs=options.jobs,
        looks={options.look: 1.0},
    )


def run_loop(options: LoopOptions, say: Say = lambda _m: None) -> dict[str, Any]:
    """The whole loop in a fresh data folder under `options.work`; what it measured."""
    quiet_tensorflow()
    from marco_svc.config import load_settings
    from marco_svc.runtime import open_runtime
    from marco_svc.train.datasets import read_manifest
    from marco_svc.train.human_labels import export_human_labels
    from marco_svc.train.promotion import promote

    work = options.work or Path(tempfile.mkdtemp(prefix="marco-lab-loop-"))
    settings = load_settings(env={"MARCO_DATA_DIR": str(work / "data")})
    runtime = open_runtime(settings)
    timer, mix = Timer(), class_mix(options.mix)
    started = time.perf_counter()
    try:
        db = runtime.db
        with timer.step("render"):  # before TensorFlow loads: the renderers are processes
            plates = settings.resolved_data_dir / "imager"
            truth = write_lab_plates(plates, options, mix)
            manifest = held_out_set(work, options, mix)
            held = [Path(e.source) for e in read_manifest(manifest).examples]
            if sha256s(held) & sha256s(list(truth)):
                raise SystemExit("a held-out image is also a labelled one")
        with timer.step("base"):
            base = base_model(settings, db, options, say)
            active = activate(db, base)
        say(f"active model: {active}")
        with timer.step("ingest_score"):
            ids, scored = ingest_and_score(runtime, plates)
        say(f"ingested and scored {scored} drops of the new lab ({options.look} look)")
        with timer.step("human_scores"):
            labels = record_labels(db, {ids[p]: label for p, label in truth.items()}, options.scale)
        say(f"labelled {labels['labelled']} drops, {labels['corrected']} of them corrections")
        with timer.step("labels_export"):
            labels_csv = work / "labels.csv"
            export = export_human_labels(db, labels_csv, options.scale)
        with timer.step("fine_tune"):
            candidate, export_outcome = fine_tune(settings, db, labels_csv, active, options)
            training = candidate.card.training
        say(f"fine-tuned {candidate.ref} from {active}")
        with timer.step("promote"):
            promotion = promote(settings, db, candidate.ref, str(manifest), progress=say)
        from marco_svc import registry

        now = registry.active_version(db)
        return {
            "base": active,
            "candidate": candidate.ref,
            "look": options.look,
            "mix": options.mix,
            "scale": options.scale,
            "image_size": list(options.size),
            "labels": labels,
            "exported": export.written,
            "training": {
                "images": training["images"],
                "epochs": training["epochs"],
                "restored_best_epoch": training["restored_best_epoch"],
                "freeze_epochs": training["config"]["recipe"]["freeze_epochs"],
                "export": export_outcome,
            },
            "held_out": options.held_out,
            "before": asdict(promotion.incumbent),
            "after": asdict(promotion.candidate),
            "better": promotion.better,
            "activated": promotion.activated,
            "active_now": f"{now[0]}:{now[1]}" if now else None,
            "reasons": promotion.reasons,
            "rule": promotion.rule,
            "card": promotion.card,
            "work": str(work),
            "seconds": timer.seconds,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        runtime.close()
        if options.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _change(before: float | None, after: float | None) -> str:
    return "" if before is None or after is None else f"{(after - before) * 100:+.1f} pt"


def table(result: dict[str, Any]) -> list[str]:
    """The before/after figures as text rows."""
    before, after = result["before"], result["after"]
    named = {
        "four-way accuracy": "accuracy",
        "crystal recall (top-1)": "crystal_recall",
        "crystal recall, 1.6% FPR": "crystal_recall_at_fpr",
        "ten-way accuracy": "ten_way_accuracy",
    }
    rows = [(name, before[key], after[key]) for name, key in named.items()]
    rows += [(f"  {k}", v, after["per_class"][k]) for k, v in before["per_class"].items()]
    ten_before, ten_after = before["per_class_ten"], after["per_class_ten"]
    if ten_before and ten_after:
        rows += [(f"  {k}", v, ten_after[k]) for k, v in ten_before.items()]
    width = max(len(name) for name, _, _ in rows) + 2
    title = f"held-out {result['look']} drops"
    lines = [
        f"{title:<{width}}{'before':>10}{'after':>10}{'change':>11}",
        f"{'':<{width}}{result['base'][-9:]:>10}{result['candidate'][-9:]:>10}",
    ]
    lines += [
        f"{name:<{width}}{_pct(b):>10}{_pct(a):>10}{_change(b, a):>11}" for name, b, a in rows
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> tuple[LoopOptions, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="default", help="default | tiny | NAME[:VERSION]")
    parser.add_argument("--look", default="hanging", help="the new lab's imager look")
    parser.add_argument("--labelled", type=int, default=200, help="drops the scientist labels")
    parser.add_argument("--held-out", type=int, default=300, help="held-out drops of the lab")
    parser.add_argument("--size", default="256x306", help="HEIGHTxWIDTH of the lab's images")
    parser.add_argument("--mix", choices=("screening", "plate"), default="screening")
    parser.add_argument("--scale", choices=("marco4", "merck10"), default="marco4")
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs than the preset")
    parser.add_argument("--freeze-epochs", type=int, default=None, help="trunk frozen (heads)")
    parser.add_argument("--no-export", action="store_true", help="skip the preset's int8 export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="render processes")
    parser.add_argument("--keep", type=Path, default=None, help="work in (and keep) this folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    options = LoopOptions(
        base=args.base,
        look=args.look,
        labelled=args.labelled,
        held_out=args.held_out,
        size=(height, width),
        mix=args.mix,
        scale=args.scale,
        epochs=args.epochs,
        freeze_epochs=args.freeze_epochs,
        export=not args.no_export,
        seed=args.seed,
        jobs=args.jobs,
        work=args.keep,
    )
    return options, args.quiet


def main() -> None:
    options, quiet = parse_args()
    say: Say = (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run_loop(options, say)
    for line in table(result):
        print(line)
    verdict = "activated" if result["activated"] else "not activated"
    print(f"{result['candidate']}: {verdict} ({'; '.join(result['reasons'])})")
    print(f"active now: {result['active_now']}; rule: {result['rule']}")
    training = result["training"]
    print(
        f"fine-tune: {training['images']} images, {training['epochs']} epochs "
        f"({training['freeze_epochs']} with the trunk frozen), best epoch "
        f"{training['restored_best_epoch']} kept; export {training['export']}"
    )
    steps = ", ".join(f"{k} {v:g}" for k, v in result["seconds"].items())
    print(f"seconds: {steps}; wall {result['wall_seconds']:g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
