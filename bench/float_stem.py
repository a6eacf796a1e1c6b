"""int8 with a float stem against all-int8, side by side in one run, for a model folder.

Both flatbuffers are converted from the folder's Keras model with the same calibration
images; each is compared with Keras (top-1 agreement per head, largest probability
difference) on generated drops in the default preset's looks and class mix, and timed on
LiteRT with one thread (the network only, preprocessed inputs, batch 1), rounds
alternating. Prints both and the latency ratio.

    python bench/float_stem.py [--model FOLDER] [--images 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marco_svc.nets import quiet_tensorflow, silenced_stderr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/default/1")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quiet_tensorflow()
    import keras

    from marco_svc.nets.card import ModelCard
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.nets.runner import KerasRunner, serving_model
    from marco_svc.synth.dataset import write_dataset
    from marco_svc.train.datasets import read_dataset
    from marco_svc.train.export import convert

    card = ModelCard.load(args.model)
    preset = tomllib.loads((ROOT / "models/presets/default.toml").read_text())["data"]
    synthetic = preset["synthetic"]
    with tempfile.TemporaryDirectory(prefix="float-stem-") as tmp:
        manifest = write_dataset(
            tmp, 2 * args.images, seed=7, size=synthetic["size"], class_mix=synthetic["mix"],
            jobs=2, looks=synthetic["looks"],
        )  # fmt: skip
        prep = from_spec(card.preprocessing)
        examples = read_dataset(manifest).examples
        inputs = np.stack([prep.np_from_bytes(Path(e.source).read_bytes()) for e in examples])
    calibration, check = inputs[: args.images], inputs[args.images :]
    reference = KerasRunner(card, args.model)
    want = [reference.predict(check[i : i + 32]) for i in range(0, len(check), 32)]
    model = keras.saving.load_model(args.model / card.artifacts["keras"].file, compile=False)
    serving = serving_model(model, list(card.heads))
    flavours = {name: convert(serving, "tflite-int8", calibration[:200], stem)
                for name, stem in (("all-int8", False), ("float-stem", True))}  # fmt: skip
    timings: dict[str, list[float]] = {name: [] for name in flavours}
    for name, flatbuffer in flavours.items():
        predict = _network(flatbuffer)
        got = [predict(check[i : i + 32]) for i in range(0, len(check), 32)]
        figures = []
        for scheme in card.heads:
            w = np.concatenate([batch[scheme] for batch in want])
            g = np.concatenate([batch[scheme] for batch in got])
            agree = float((w.argmax(1) == g.argmax(1)).mean())
            figures.append(f"{scheme} {agree:.2%} (max diff {np.abs(w - g).max():.3f})")
        print(f"{name:10} {len(flatbuffer) / 1e6:.2f} MB  agreement on {len(check)}: "
              + ", ".join(figures))  # fmt: skip
    for _ in range(args.rounds):
        for name, flatbuffer in flavours.items():
            predict = _network(flatbuffer)
            predict(check[:8])  # warm up
            tick = time.perf_counter()
            for x in check[:200]:
                predict(x[None])
            timings[name].append((time.perf_counter() - tick) / 200 * 1000)
    medians = {name: statistics.median(t) for name, t in timings.items()}
    print("  ".join(f"{name} {ms:.2f} ms/image" for name, ms in medians.items()))
    print(f"float-stem / all-int8 latency: {medians['float-stem'] / medians['all-int8']:.2f}x")


def _network(flatbuffer: bytes) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One-thread LiteRT on float inputs, (de)quantized as the runner does where the graph
    is integer; the signature's details are read once, outside the timed calls."""
    from ai_edge_litert.interpreter import Interpreter

    from marco_svc.nets.runner import _dequantize, _quantize

    with silenced_stderr():
        run = Interpreter(model_content=flatbuffer, num_threads=1).get_signature_runner()
    ((name, spec),) = run.get_input_details().items()
    outputs = run.get_output_details()

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        got = run(**{name: _quantize(batch, spec)})
        return {scheme: _dequantize(value, outputs[scheme]) for scheme, value in got.items()}

    return predict


if __name__ == "__main__":
    main()
