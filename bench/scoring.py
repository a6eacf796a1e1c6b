"""Scoring speed, measured side by side in one run on this machine.

1. End-to-end milliseconds per image (read + decode + preprocess + inference, batch 1)
   for the MARCO network through TensorFlow fp32, LiteRT fp32 and LiteRT int8, 2 threads
   each, the three taking turns image by image so they share the machine's noise. The
   MARCO weights are random (latency does not depend on them); int8 is calibrated on
   the first images.
2. A whole 192-drop synthetic plate through the service path: files copied into a
   watched folder, ingested, scored by the default model; seconds from the first file
   to the last score.
3. SmoothGrad seconds per image (n=50) for the MARCO network and the default model.

The LAST line is `key=value` pairs.

    python bench/scoring.py --images ../shared/data/formulatrix_90j8/<the plate folder>
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THREADS = 2
DEFAULT_IMAGES = ROOT.parent / "shared/data/formulatrix_90j8/90j8_2018-04-11_RI1000-0081-2drop"


def marco_folder(folder: Path, calibration: list[bytes]) -> None:
    """MARCO Inception-v3 (random weights) as keras, tflite-fp32 and tflite-int8."""
    import keras

    from marco_svc.nets import lite_preprocessing
    from marco_svc.nets.architectures import architecture, new_card
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.nets.runner import serving_model
    from marco_svc.train.export import FILES, convert

    keras.utils.set_random_seed(0)
    model = architecture("marco-inception-v3").build()
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    card = new_card("marco-inception-v3", "marco-bench", "random")
    card.add_artifact("keras", folder, "model.keras")
    serving = serving_model(model, list(card.heads))
    prep = from_spec(card.preprocessing)
    inputs = [prep.np_from_bytes(data) for data in calibration]
    for fmt in ("tflite-fp32", "tflite-int8"):
        (folder / FILES[fmt]).write_bytes(convert(serving, fmt, inputs))
        card.add_artifact(fmt, folder, FILES[fmt])
    lite_preprocessing.add_to(card, folder)  # as export_model does
    card.save(folder)


def open_runners(folder: Path) -> dict[str, object]:
    from marco_svc.nets.card import ModelCard
    from marco_svc.nets.runner import KerasRunner, LiteRTRunner

    card = ModelCard.load(folder)
    return {
        "tf_fp32": KerasRunner(card, folder),
        "litert_fp32": LiteRTRunner(card, folder, "tflite-fp32", threads=THREADS),
        "int8": LiteRTRunner(card, folder, "tflite-int8", threads=THREADS),
    }


def end_to_end(runners: dict[str, object], files: list[Path], rounds: int) -> dict[str, float]:
    """Median milliseconds per image, each runner taking its turn on the same file."""
    timings: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():  # warm-up
        runner.predict(runner.preprocess(files[0].read_bytes())[None])
    for _ in range(rounds):
        for path in files:
            for name, runner in runners.items():
                started = time.perf_counter()
                x = runner.preprocess(path.read_bytes())
                runner.predict(x[None])
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def plate_seconds(work: Path) -> tuple[float, int, str]:
    """First file copied into a watched folder -> last score stored, for a 96x2 plate."""
    from datetime import datetime

    from sqlalchemy import func, select

    from marco_svc.config import load_settings
    from marco_svc.db.models import Score
    from marco_svc.runtime import open_runtime
    from marco_svc.scoring.worker import ScoringWorker
    from marco_svc.synth.plates import write_plate
    from marco_svc.watch import watcher_for

    source = work / "rendered"
    written = write_plate(
        source, barcode="BENCH1", wells=96, drops=2, seed=11, inspected_at=datetime(2026, 1, 5)
    )
    inbox = work / "inbox"
    inbox.mkdir()
    settings = load_settings(
        env={}, data_dir=work / "data", heatmaps_for_hits=False, watch_settle_seconds=0.5
    )
    runtime = open_runtime(settings)
    scorer = ScoringWorker(runtime, poll_seconds=0.2)
    scorer.start()
    watcher = watcher_for(runtime, [str(inbox)])
    watcher.start()
    try:
        model = None
        while model is None:  # the scorer loads the default model before the clock starts
            model = scorer.status()["model"] or (scorer.status()["last_error"] and "none")
            time.sleep(0.05)
        files = sorted(written.image_root.rglob("*.jpg"))
        target = inbox / written.image_root.name
        target.mkdir()
        started = time.perf_counter()
        for path in files:
            shutil.copy(path, target / path.name)
        while True:
            with runtime.db.session() as session:
                done = session.scalar(select(func.count(Score.id)))
            if done >= len(files):
                break
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {done} of {len(files)} scored after 600 s")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    finally:
        watcher.stop()
        scorer.stop()
        runtime.close()
    return seconds, len(files), str(model)


def smoothgrad_seconds(folder: Path, data: bytes, samples: int = 50) -> float:
    import keras

    from marco_svc.nets.card import ModelCard
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.scoring.saliency import SmoothGradParams, smoothgrad

    card = ModelCard.load(folder)
    network = keras.saving.load_model(folder / card.artifacts["keras"].file, compile=False)
    x = from_spec(card.preprocessing).np_from_bytes(data)
    scheme = next(iter(card.heads))
    params = SmoothGradParams(n=samples)
    smoothgrad(network, x, scheme, 0, replace(params, n=params.batch_size))  # compile
    started = time.perf_counter()
    smoothgrad(network, x, scheme, 0, params)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--count", type=int, default=24, help="images per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-plate", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    from marco_svc import registry
    from marco_svc.nets import quiet_tensorflow

    quiet_tensorflow()
    files = sorted(args.images.glob("*.jp*g"))[: args.count]
    if not files:
        raise SystemExit(f"no JPEG images in {args.images}")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="marco-bench-") as tmp:
        work = Path(tmp)
        marco = work / "marco"
        marco_folder(marco, [p.read_bytes() for p in files[:16]])
        ms = end_to_end(open_runners(marco), files, args.rounds)
        print(
            f"MARCO Inception-v3 (599x599), end to end, batch 1, {THREADS} threads, "
            f"median of {len(files) * args.rounds} images each:"
        )
        print(f"{'path':<12} {'ms/image':>9} {'x vs TF fp32':>13}")
        for name, value in ms.items():
            print(f"{name:<12} {value:9.1f} {ms['tf_fp32'] / value:13.2f}")
        figures.update({f"{name}_ms_per_image": round(v, 1) for name, v in ms.items()})
        figures["speedup_int8_vs_tf_fp32"] = round(ms["tf_fp32"] / ms["int8"], 2)

        if not args.skip_plate:
            seconds, count, model = plate_seconds(work / "plate")
            print(
                f"\n{count}-drop plate, first file to last score ({model}): {seconds:.1f} s "
                f"({seconds / count * 1000:.0f} ms per drop)"
            )
            figures["plate_192_seconds"] = round(seconds, 1)

        default = registry.default_shipped()
        sg_marco = smoothgrad_seconds(marco, files[0].read_bytes())
        print(f"\nSmoothGrad n=50, s per image: MARCO {sg_marco:.1f}", end="")
        figures["smoothgrad_marco_s"] = round(sg_marco, 1)
        if default is not None:
            sg_default = smoothgrad_seconds(default.folder, files[0].read_bytes())
            print(f", default model {sg_default:.2f} ({sg_marco / sg_default:.0f}x less)")
            figures["smoothgrad_default_s"] = round(sg_default, 2)
        else:
            print()
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
