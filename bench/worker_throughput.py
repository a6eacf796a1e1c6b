"""Scoring throughput of Celery workers: 1 worker against 2, side by side in one run.

Each round makes a scratch PostgreSQL database, ingests the same `--images` generated
drop photographs (1280x960 JPEGs, like a Formulatrix frame), starts N `marco-svc worker`
processes (pool solo, `scoring_threads=1`: one thread each) on a Redis queue of its own,
then times the dispatcher (as `marco-svc watch` runs it) from the first task sent to the
last score stored. The model is the shipped default, int8 LiteRT, heatmaps off. Rounds
alternate 1, 2, 2, 1, ... so drift on a shared machine falls on both sides.

    python bench/worker_throughput.py [--images 480] [--rounds 2] [--redis URL]

Prints images/s for each and the ratio (goal on 2 cores: 2 workers >= 1.8x one).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_burst import names, scratch_postgres  # noqa: E402  (flat-export names, scratch db)

DEFAULT_SERVER = os.environ.get("MARCO_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def generate(folder: Path, count: int) -> None:
    """`count` distinct 1280x960 drop-like JPEGs (a smooth gradient, a dark disc, noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:960, 0:1280]
    disc = ((yy - 480) ** 2 + (xx - 640) ** 2 < 380**2).astype(np.float32)
    for n, name in enumerate(names(count)):
        base = 170 + 30 * disc + rng.normal(0, 6, size=(960, 1280)) + n % 17
        pixels = np.clip(np.stack([base, base * 0.97, base * 0.92], axis=-1), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=88)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())


def environment(database_url: str, data_dir: Path, redis: str, queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MARCO_CONFIG": "",
        "MARCO_DATABASE_URL": database_url,
        "MARCO_DATA_DIR": str(data_dir),
        "MARCO_BROKER_URL": redis,
        "MARCO_BROKER_QUEUE": queue,
        "MARCO_SCORING_ARTIFACT": "tflite-int8",
        "MARCO_SCORING_THREADS": "1",
        "MARCO_HEATMAPS_FOR_HITS": "false",
        "MARCO_LOG_LEVEL": "WARNING",
    }


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    """`count` worker processes (each loads the model on its first task)."""
    started = []
    for n in range(count):
        out = (logs / f"worker{n}.log").open("wb")
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "marco_svc", "worker", f"--hostname=bench{n}@%h"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    return started


def one_round(workers: int, staged: Path, args: argparse.Namespace) -> float:
    """Images per second that `workers` workers score, dispatch to last score."""
    from sqlalchemy import func, select

    from marco_svc.config import load_settings
    from marco_svc.db.models import Score
    from marco_svc.runtime import open_runtime
    from marco_svc.tasks.dispatcher import Dispatcher

    url, drop = scratch_postgres(args.server)
    work = Path(tempfile.mkdtemp(prefix="marco-throughput-"))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = environment(url, work / "data", args.redis, queue)
    processes: list[subprocess.Popen] = []
    runtime = None
    try:
        subprocess.run(
            [sys.executable, "-m", "marco_svc", "ingest", str(staged)],
            env=env,
            check=True,
            capture_output=True,
        )
        settings = load_settings(env={}, data_dir=work / "data", database_url=url)
        settings = replace(
            settings,
            broker_url=args.redis,
            broker_queue=queue,
            scoring_batch_size=args.batch,
            dispatch_max_queued=4 * workers,
        )
        runtime = open_runtime(settings, upgrade=False)
        processes = start_workers(workers, env, work)
        time.sleep(args.warmup)  # let the workers import and connect before timing
        dispatcher = Dispatcher(runtime, poll_seconds=0.2)
        started = time.perf_counter()
        dispatcher.start()
        while True:
            with runtime.db.session() as session:
                done = session.scalar(select(func.count()).select_from(Score))
            if done >= args.images:
                break
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a worker died; see {work}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        dispatcher.stop()
        return args.images / seconds
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        if runtime is not None:
            runtime.close()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=2, help="Pairs of (1, 2) rounds.")
    parser.add_argument("--batch", type=int, default=16, help="Images per task.")
    parser.add_argument("--warmup", type=float, default=8.0, help="Seconds for workers to start.")
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    staged = Path(tempfile.mkdtemp(prefix="marco-throughput-images-"))
    generate(staged, args.images)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for n in range(args.rounds):
        for workers in (1, 2) if n % 2 == 0 else (2, 1):
            rate = one_round(workers, staged, args)
            rates[workers].append(rate)
            print(f"round {n + 1}: {workers} worker(s) {rate:.1f} images/s", flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"1 worker {one:.1f} images/s, 2 workers {two:.1f} images/s: ratio {two / one:.2f}")
    print(json.dumps({"one": round(one, 2), "two": round(two, 2), "ratio": round(two / one, 3)}))


if __name__ == "__main__":
    main()
