"""Forward latency of each network on this CPU, TensorFlow, batch 1 and 8, side by side.

Random weights (latency does not depend on them), the serving outputs only (probabilities),
each forward a compiled `tf.function`. All configurations are warmed up, then timed in
round-robin so that load from other processes spreads evenly; the figure is the median
milliseconds per image. The last line is key=value pairs.

    python bench/nets_latency.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marco_svc.nets import quiet_tensorflow

NETWORKS = ("marco-inception-v3", "resnet-56", "resnet-32", "resnet-56-two-head")
BATCHES = (1, 8)
KEYS = {
    "marco-inception-v3": "marco",
    "resnet-56": "resnet56",
    "resnet-32": "resnet32",
    "resnet-56-two-head": "resnet56_2head",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per configuration")
    args = parser.parse_args()

    quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from marco_svc.nets.architectures import architecture
    from marco_svc.nets.preprocessing import from_spec
    from marco_svc.nets.runner import serving_model

    keras.utils.set_random_seed(0)
    runs = {}
    shapes, params = {}, {}
    for name in NETWORKS:
        arch = architecture(name)
        model = arch.build()
        params[name] = model.count_params()
        serving = serving_model(model, list(arch.heads))
        forward = tf.function(lambda x, m=serving: m(x, training=False))
        shape = from_spec(arch.preprocessing).input_shape
        shapes[name] = shape
        for batch in BATCHES:
            pixels = np.random.default_rng(batch).uniform(-1, 1, (batch, *shape))
            x = tf.constant(pixels, tf.float32)
            runs[(name, batch)] = (forward, x)

    def once(forward, x) -> float:
        start = time.perf_counter()
        out = forward(x)
        for value in out.values():
            value.numpy()
        return time.perf_counter() - start

    for forward, x in runs.values():
        for _ in range(args.warmup):
            once(forward, x)
    timings: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, (forward, x) in runs.items():
            timings[key].append(once(forward, x))
    ms = {key: 1000 * statistics.median(t) / key[1] for key, t in timings.items()}

    marco = ms[("marco-inception-v3", 1)]
    print(
        f"forward latency per image, TensorFlow {tf.__version__} CPU, {os.cpu_count()} cores, "
        f"median of {args.repeats} after {args.warmup} warm-up runs"
    )
    print(
        f"{'network':<20} {'input':<11} {'params':>9} {'b1 ms':>9} {'b8 ms':>9} "
        f"{'b8/b1':>6} {'x faster than MARCO (b1)':>25}"
    )
    for name in NETWORKS:
        b1, b8 = ms[(name, 1)], ms[(name, 8)]
        size = "x".join(map(str, shapes[name]))
        print(
            f"{name:<20} {size:<11} {params[name]:>9,} {b1:>9.1f} {b8:>9.1f} "
            f"{b8 / b1:>6.2f} {marco / b1:>25.1f}"
        )
    pairs = [f"{KEYS[name]}_b{batch}_ms={ms[(name, batch)]:.2f}" for name, batch in ms]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
