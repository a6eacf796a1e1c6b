"""Ingest rate and peak memory of a burst of files, watched vs a plain ingest loop, side by side.

Generates small distinct JPEGs (384 wells x 3 drops = 1,152 per plate, flat-export names)
once, then runs each configuration in its own child process on a fresh database:

- events:   the watcher runs (real watchdog observer); the files are written into the
            watched folder at once; timed until every file is stored and the watcher idle;
- backfill: the files are there before the watcher starts (a restart); same timing;
- direct:   no watcher, one `ingest()` per file in a loop (what `marco-svc ingest` does);
- events at 4x the files, to show that memory does not grow with the burst;
- junk:     the watcher runs and one 2 GiB file named like an image is written into the
            watched folder (`--junk-gib`); it must be refused from its size, unread, so
            peak memory stays that of an idle watcher.

Memory: peak resident set size of the child process (`resource.getrusage(RUSAGE_SELF)
.ru_maxrss`), so it includes the interpreter and libraries; `rss_before` (VmRSS just
before the burst) is printed beside it so the burst's own share is visible.

    python bench/ingest_burst.py [--plates 1] [--scale 4] [--junk-gib 2] [--postgres SERVER_URL]

SERVER_URL is like postgresql+psycopg://postgres@127.0.0.1:5432 (a scratch database is
created and dropped). The last line is key=value pairs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FOLDER = "BURST{plate}_2024-05-01_RI-9-3drop"
WELLS = [(row, col) for row in "ABCDEFGHIJKLMNOP" for col in range(1, 25)]


def names(files: int) -> Iterator[str]:
    """Relative paths of the burst, generated lazily (the harness holds no list of them)."""
    for n in range(files):
        plate, rest = divmod(n, len(WELLS) * 3)
        (row, col), drop = WELLS[rest // 3], rest % 3 + 1
        yield f"{FOLDER.format(plate=plate)}/BURST{plate}_{col:02d}{row}_{drop}.jpg"


def generate(staged: Path, files: int) -> None:
    """`files` distinct 32x32 JPEGs named like a flat export, 1,152 per plate, aged 1 h."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    old = time.time() - 3600
    for name in names(files):
        path = staged / name
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pixels = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        os.utime(path, (old, old))


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(config: dict) -> dict:
    """One configuration, in this (fresh) process."""
    from imager_adapters.registry import parse_path
    from marco_svc.config import load_settings
    from marco_svc.ingest import ingest
    from marco_svc.ingest_files import file_policy
    from marco_svc.runtime import open_runtime
    from marco_svc.watch import watcher_for

    work, staged, files = Path(config["work"]), config["staged"], config["files"]
    root = work / "watched"
    root.mkdir()
    settings = load_settings(
        env={}, data_dir=work / "data", database_url=config["db"], watch_rescan_seconds=0
    )
    runtime = open_runtime(settings)

    def place(copy: Callable[[str, str], object]) -> None:
        for name in names(files):
            target = f"{root}/{name}"
            os.makedirs(os.path.dirname(target), exist_ok=True)
            copy(f"{staged}/{name}", target)

    def until_done(watcher: object) -> None:
        stats = watcher.stats  # type: ignore[attr-defined]
        while sum(stats[o] for o in ("created", "duplicate", "failed")) < files:
            time.sleep(0.005)
        while not watcher.idle():  # type: ignore[attr-defined]
            time.sleep(0.005)

    mode = config["mode"]
    stats: dict = {}
    if mode == "events":
        watcher = watcher_for(runtime, [root])
        watcher.start()
        watcher.wait_idle(60)
        rss_before, start = vm_rss_mb(), time.perf_counter()
        place(shutil.copyfile)  # fresh mtimes: completeness comes from the close events
        until_done(watcher)
        elapsed = time.perf_counter() - start
        watcher.stop()
        stats = dict(watcher.stats)
    elif mode == "junk":
        watcher = watcher_for(runtime, [root])
        watcher.start()
        watcher.wait_idle(60)
        rss_before, start = vm_rss_mb(), time.perf_counter()
        junk = root / next(names(1))
        junk.parent.mkdir(parents=True)
        block = os.urandom(1024 * 1024)
        with open(junk, "wb") as out:  # really written: it lands as a real imager file would
            for _ in range(files):
                out.write(block)
        files = 1
        until_done(watcher)
        elapsed = time.perf_counter() - start
        watcher.stop()
        stats = dict(watcher.stats)
    elif mode == "backfill":
        place(shutil.copy2)
        watcher = watcher_for(runtime, [root])
        rss_before, start = vm_rss_mb(), time.perf_counter()
        watcher.start()
        until_done(watcher)
        elapsed = time.perf_counter() - start
        watcher.stop()
        stats = dict(watcher.stats)
    else:
        place(shutil.copyfile)
        rss_before, start = vm_rss_mb(), time.perf_counter()
        policy = file_policy(settings, [root])  # as `marco-svc ingest ROOT` reads it
        for name in names(files):
            result = ingest(runtime.db, parse_path(root / name), policy)
            stats[result.outcome] = stats.get(result.outcome, 0) + 1
        elapsed = time.perf_counter() - start
    runtime.close()
    return {
        "files": files,
        "seconds": elapsed,
        "files_per_s": files / elapsed,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stats": stats,
    }


def scratch_postgres(server: str) -> tuple[str, Callable[[], None]]:
    """A new empty database on `server`, and the function that drops it."""
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    name = f"marco_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{server}/{name}", drop


def run(name: str, config: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    outcome = "failed" if config["mode"] == "junk" else "created"
    stored = result["stats"].get(outcome, 0)
    if stored != result["files"]:
        raise SystemExit(f"{name}: {stored} of {result['files']} stored: {result['stats']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plates", type=int, default=1, help="plates of 1,152 files (1)")
    parser.add_argument("--scale", type=int, default=4, help="the big burst, x files (4; 0=off)")
    parser.add_argument("--junk-gib", type=int, default=2, help="junk file size in GiB (2; 0=off)")
    parser.add_argument("--postgres", help="PostgreSQL server URL (also run there)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    files = args.plates * len(WELLS) * 3
    with tempfile.TemporaryDirectory(prefix="marco-bench-") as tmp:
        staged = Path(tmp) / "staged"
        generate(staged, files * max(args.scale, 1))
        plan = [("sqlite", mode, files) for mode in ("direct", "events", "backfill")]
        if args.scale > 1:
            plan.append(("sqlite", "events", files * args.scale))
        if args.junk_gib:
            plan.append(("sqlite", "junk", args.junk_gib * 1024))  # MiB written
        if args.postgres:
            plan += [("postgres", mode, files) for mode in ("direct", "events", "backfill")]
        results = {}
        for n, (backend, mode, count) in enumerate(plan):
            work = Path(tmp) / f"run{n}"
            work.mkdir()
            drop = None
            if backend == "sqlite":
                url = f"sqlite:///{work / 'bench.sqlite3'}"
            else:
                url, drop = scratch_postgres(args.postgres)
            try:
                config = {"work": str(work), "staged": str(staged), "files": count}
                results[(backend, mode, count)] = run(
                    f"{backend} {mode}", {**config, "db": url, "mode": mode}
                )
            finally:
                if drop is not None:
                    drop()  # type: ignore[operator]
            shutil.rmtree(work)

    print(
        f"{'backend':<9} {'mode':<9} {'files':>6} {'seconds':>8} {'files/s':>8} "
        f"{'rss before':>11} {'peak rss':>9}  watcher counts"
    )
    for (backend, mode, count), r in results.items():
        counts = {k: v for k, v in r["stats"].items() if k not in ("created",)}
        print(
            f"{backend:<9} {mode:<9} {count:>6} {r['seconds']:>8.2f} {r['files_per_s']:>8.0f} "
            f"{r['rss_before_mb']:>8.1f} MB {r['peak_rss_mb']:>6.1f} MB  {counts}"
        )
    pairs = {"files": files, "memory": "ru_maxrss_peak_rss"}
    for (backend, mode, count), r in results.items():
        if mode == "junk":
            pairs["junk_gib"] = count // 1024
            pairs["junk_peak_rss_mb"] = round(r["peak_rss_mb"], 1)
            pairs["junk_rss_growth_mb"] = round(r["peak_rss_mb"] - r["rss_before_mb"], 1)
            continue
        tag = f"{backend}_{mode}" + (f"_x{count // files}" if count != files else "")
        pairs[f"{tag}_fps"] = round(r["files_per_s"], 1)
        pairs[f"{tag}_peak_rss_mb"] = round(r["peak_rss_mb"], 1)
    for backend in ("sqlite", "postgres"):
        direct = results.get((backend, "direct", files))
        for mode in ("events", "backfill"):
            other = results.get((backend, mode, files))
            if direct and other:
                ratio = other["files_per_s"] / direct["files_per_s"]
                pairs[f"{backend}_{mode}_vs_direct"] = round(ratio, 2)
                print(f"{backend}: {mode} / direct ingest rate = {ratio:.2f}")
    big = results.get(("sqlite", "events", files * args.scale))
    small = results.get(("sqlite", "events", files))
    if big and small:
        growth = big["peak_rss_mb"] - small["peak_rss_mb"]
        pairs["sqlite_events_peak_rss_growth_mb"] = round(growth, 1)
        print(f"sqlite events: {args.scale}x the files, peak RSS {growth:+.1f} MB")
    junk = next((r for (_, mode, _), r in results.items() if mode == "junk"), None)
    if junk and small:
        ratio = junk["peak_rss_mb"] / small["peak_rss_mb"]
        pairs["junk_vs_events_peak_rss"] = round(ratio, 2)
        print(f"a {args.junk_gib} GiB junk file: peak RSS {ratio:.2f}x that of the plate burst")
    print(" ".join(f"{key}={value}" for key, value in pairs.items()))


if __name__ == "__main__":
    main()
