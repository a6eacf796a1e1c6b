"""Server latency of the LIMS hits poll, the scores feed and the plate endpoints over
100,000 stored scores, side by side in one run (goal: p99 <= 50 ms for the hits poll and
for one plate).

A scratch database is filled in bulk (executemany, no ingest): 384-well plates with 3 drops
(1,152 images per inspection), `--inspections` a week apart each, as many plates as it
takes for `--scores` images; one model version registered from a placeholder model folder
and activated (so the hits feed's default, the model that scores now, resolves); the first
`--scores` images in time order scored by it (feed positions 1..N, ~3% hits), the few
left over still new. Then the app (`create_app(Service(runtime))`) answers through Flask's
test client in this process (server time, no network) for a LIMS token. Each round asks
every endpoint once, in turn, so they share the machine's noise:

    hits        /api/v1/hits?since=<random position>&limit=100  (default model, resolved
                per request: registry.scoring_version_id)
    hits_model  the same with model=NAME:VERSION (no resolution)
    hits_head   /api/v1/hits?since=<one of the newest 1,000 positions>&limit=100 (the
                steady LIMS poll, near the end of the feed)
    scores      /api/v1/scores?since=<random position>&limit=500
    plate       /api/v1/plates/<random barcode>  (counts)
    drops       /api/v1/inspections/<random inspection>/drops?limit=1000  (of 1,152 images)
    plates      /api/v1/plates?limit=100

Per endpoint: p50 / p90 / p99 / max ms of the whole request, the p50 of its SQL time (cursor
execute; on PostgreSQL that includes the rows' transfer, on SQLite rows are stepped while
fetched, so partly counted outside) and statements per request. PostgreSQL tables are
VACUUM ANALYZEd after the load (what autovacuum does soon after); SQLite gets no ANALYZE
(the service never runs one). `--explain` also prints the plan of the slowest statement of
one request of each endpoint (EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN
on SQLite).

    python bench/api_latency.py [--postgres SERVER_URL] [--sqlite] [--requests 300]
                                [--scores 100000] [--inspections 4] [--explain]

SERVER_URL defaults to postgresql+psycopg://postgres@127.0.0.1:5432 (a scratch database is
created and dropped, even on error); `--postgres ''` skips PostgreSQL. The LAST line is
key=value pairs: `pg_<endpoint>_p50_ms=` and `_p99_ms=` for each endpoint,
`pg_hits_p99_ok=` and `pg_plate_p99_ok=` (yes when p99 <= 50 ms),
`pg_hits_default_vs_model_p50=` (what resolving the default model costs, as a ratio) and
`pg_hits_default_extra_ms=`; with --sqlite the same with `sqlite_` and
`sqlite_vs_pg_<endpoint>_p99=`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_burst import scratch_postgres  # noqa: E402  (a throw-away database)

GOAL_MS = 50.0
WELLS = [(row, column) for row in range(16) for column in range(1, 25)]
DROPS = 3
PER_INSPECTION = len(WELLS) * DROPS  # 1,152
START = datetime(2024, 1, 8, 8)
CHUNK = 5000
HIT_RATE = 0.03
MODEL = ("bench-marco", "1")
ENDPOINTS = ("hits", "hits_model", "hits_head", "scores", "plate", "drops", "plates")
GOALS = ("hits", "plate")
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def model_folder(folder: Path) -> Path:
    """A model folder with a card and a placeholder artifact (registered, never run)."""
    from marco_svc.nets.architectures import new_card

    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"placeholder: the bench never runs this model")
    card = new_card("marco-inception-v3", *MODEL, created_at="2024-01-01")
    card.add_artifact("keras", folder, "model.keras")
    card.save(folder)
    return folder


def chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def active_bench_model(runtime: Any, work: Path) -> tuple[int, dict[str, Any], str]:
    """Register and activate the bench's fake model: its version id, operating points and
    NAME:VERSION."""
    from sqlalchemy import select

    from marco_svc import registry
    from marco_svc.db.models import ModelVersion

    stored = registry.register(runtime.settings, model_folder(work / "model-src"), db=runtime.db)
    registry.activate(runtime.db, stored.ref)
    with runtime.db.session() as session:
        model = session.scalar(select(ModelVersion).where(ModelVersion.name == MODEL[0]))
        return model.id, model.card.get("operating_points", {}), stored.ref


def seed(runtime: Any, work: Path, scores: int, per_plate: int) -> dict[str, Any]:
    """Plates, drops, inspections, images and `scores` scores, inserted in bulk."""
    from sqlalchemy import func, insert, select, text, update

    from marco_svc.db.models import (
        Drop,
        FeedCounter,
        Image,
        Inspection,
        Plate,
        Score,
    )
    from marco_svc.scoring.lab_rules import LabRules
    from marco_svc.scoring.rules import decide

    model_id, points, ref = active_bench_model(runtime, work)
    rule = LabRules.parse("threshold:0.5").default
    plates = math.ceil(scores / (PER_INSPECTION * per_plate))
    inspections = plates * per_plate
    images = inspections * PER_INSPECTION
    rng = random.Random(0)
    engine = runtime.db.engine

    def plate_rows() -> Iterator[dict[str, Any]]:
        for p in range(plates):
            yield {
                "id": p + 1,
                "barcode": f"BENCH-{p + 1:04d}",
                "wells": 384,
                "drops": DROPS,
                "wells_inferred": False,
                "drops_inferred": False,
                "created_at": START + timedelta(minutes=p),
            }

    def drop_rows() -> Iterator[dict[str, Any]]:
        for p in range(plates):
            slots = ((well, d) for well in WELLS for d in range(1, DROPS + 1))
            for n, ((row, column), drop) in enumerate(slots):
                yield {
                    "id": p * PER_INSPECTION + n + 1,
                    "plate_id": p + 1,
                    "well": f"{chr(ord('A') + row)}{column}",
                    "drop_number": drop,
                    "row_index": row,
                    "column_number": column,
                }

    def imaged_at(k: int, p: int) -> datetime:
        return START + timedelta(days=7 * k, minutes=10 * p)

    def inspection_rows() -> Iterator[dict[str, Any]]:
        for k in range(per_plate):  # ids in time order: every plate's first, then second...
            for p in range(plates):
                yield {
                    "id": k * plates + p + 1,
                    "plate_id": p + 1,
                    "imaged_at": imaged_at(k, p),
                    "imager": "bench-imager",
                    "external_id": None,
                    "created_at": imaged_at(k, p),
                }

    def image_rows() -> Iterator[dict[str, Any]]:
        image_id = 0
        for k in range(per_plate):
            for p in range(plates):
                at = imaged_at(k, p)
                for n in range(PER_INSPECTION):
                    image_id += 1
                    yield {
                        "id": image_id,
                        "inspection_id": k * plates + p + 1,
                        "drop_id": p * PER_INSPECTION + n + 1,
                        "uri": f"/nonexistent/bench/BENCH-{p + 1:04d}/{k}/{n}.jpg",
                        "sha256": f"{image_id:064x}",
                        "size_bytes": 250_000,
                        "width": 1024,
                        "height": 1024,
                        "imaging_mode": "visible",
                        "version": 1,
                        "adapter": "bench",
                        "status": "scored" if image_id <= scores else "new",
                        "error": None,
                        "created_at": at,
                        "updated_at": at,
                    }

    def score_rows() -> Iterator[dict[str, Any]]:
        for n in range(scores):
            if rng.random() < HIT_RATE:
                crystals = rng.uniform(0.55, 0.95)
                rest = (1 - crystals) / 3
                probs = {"Clear": rest, "Crystals": crystals, "Other": rest, "Precipitate": rest}
            else:
                crystals = rng.uniform(0.0, 0.4)
                top = rng.choice(("Clear", "Other", "Precipitate"))
                rest = (1 - crystals) / 4
                probs = {"Clear": rest, "Crystals": crystals, "Other": rest, "Precipitate": rest}
                probs[top] += rest
            decision = decide(probs, rule, points)
            at = START + timedelta(seconds=n)
            yield {
                "id": n + 1,
                "image_id": n + 1,
                "model_version_id": model_id,
                "probabilities": probs,
                "top_class": max(probs, key=probs.get),  # type: ignore[arg-type]
                "p_crystal": decision.p_crystal,
                "hit": decision.hit,
                "rule": decision.rule,
                "quality": {},
                "latency_ms": 40.0,
                "source": "server",
                "feed_seq": n + 1,
                "created_at": at,
                "updated_at": at,
            }

    start = time.perf_counter()
    with engine.begin() as connection:
        for model_class, rows in (
            (Plate, plate_rows()),
            (Drop, drop_rows()),
            (Inspection, inspection_rows()),
            (Image, image_rows()),
            (Score, score_rows()),
        ):
            for batch in chunks(rows):
                connection.execute(insert(model_class.__table__), batch)
        counter = (
            update(FeedCounter.__table__).where(FeedCounter.name == "scores").values(value=scores)
        )
        if connection.execute(counter).rowcount == 0:
            connection.execute(insert(FeedCounter.__table__).values(name="scores", value=scores))
        hits = connection.scalar(select(func.count()).select_from(Score).where(Score.hit))
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("plates", "drops", "inspections", "images", "scores"):
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    return {
        "plates": plates,
        "inspections": inspections,
        "images": images,
        "scores": scores,
        "hits": hits,
        "seconds": time.perf_counter() - start,
        "ref": ref,
        "barcodes": [f"BENCH-{p + 1:04d}" for p in range(plates)],
    }


class SqlClock:
    """SQL statements and their cursor-execute time, counted from the engine's events."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.seconds, self.statements = 0.0, 0
        self.log: list[tuple[float, str, Any, bool]] | None = None
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, connection: Any, *_: Any) -> None:
        connection.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(
        self, connection: Any, _cursor: Any, statement: str, parameters: Any, *more: Any
    ) -> None:
        executemany = bool(more[-1])
        elapsed = time.perf_counter() - connection.info["bench_started"].pop()
        self.seconds += elapsed
        self.statements += 1
        if self.log is not None:
            self.log.append((elapsed, statement, parameters, executemany))


def urls(seeded: dict[str, Any], full_inspections: list[int], rng: random.Random) -> dict:
    """One URL per endpoint for the next round."""
    n, ref = seeded["scores"], seeded["ref"]
    since = rng.randrange(n)
    return {
        "hits": f"/api/v1/hits?since={since}&limit=100",
        "hits_model": f"/api/v1/hits?since={since}&limit=100&model={ref}",
        "hits_head": f"/api/v1/hits?since={rng.randrange(max(n - 1000, 0), n)}&limit=100",
        "scores": f"/api/v1/scores?since={rng.randrange(n)}&limit=500",
        "plate": f"/api/v1/plates/{rng.choice(seeded['barcodes'])}",
        "drops": f"/api/v1/inspections/{rng.choice(full_inspections)}/drops?limit=1000",
        "plates": "/api/v1/plates?limit=100",
    }


def check(client: Any, seeded: dict[str, Any]) -> None:
    """The answers are what the bench means to measure: the default model resolves (the
    hits poll answers the same hits with and without `model`), the feeds and pages fill."""
    plain = client.get("/api/v1/hits?since=0&limit=100")
    named = client.get(f"/api/v1/hits?since=0&limit=100&model={seeded['ref']}")
    if plain.status_code != 200 or named.status_code != 200:
        raise SystemExit(f"hits answered {plain.status_code} / {named.status_code}")
    if not plain.get_json()["hits"] or plain.get_json() != named.get_json():
        raise SystemExit("the hits feed's default model did not resolve to the seeded model")
    scores = client.get("/api/v1/scores?since=0&limit=500").get_json()["scores"]
    plate = client.get(f"/api/v1/plates/{seeded['barcodes'][0]}").get_json()
    if (
        len(scores) != 500
        or sum(plate["images"].values()) != PER_INSPECTION * plate["inspection_count"]
    ):
        raise SystemExit(f"unexpected answers: {len(scores)} scores, plate {plate}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def timed_get(client: Any, clock: SqlClock, path: str) -> tuple[Any, float, float, int]:
    """One GET: the answer (200, else the run stops), its milliseconds, its SQL
    milliseconds and statements."""
    clock.seconds, clock.statements = 0.0, 0
    start = time.perf_counter()
    answer = client.get(path)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200:
        raise SystemExit(f"{path}: {answer.status_code} {answer.get_data()[:300]}")
    return answer, elapsed * 1000, clock.seconds * 1000, clock.statements


def summary(times: list[float], sql: list[float], statements: list[int]) -> dict[str, float]:
    """p50/p90/p99/max milliseconds, median SQL milliseconds and statements."""
    return {
        "p50": statistics.median(times),
        "p90": percentile(times, 0.90),
        "p99": percentile(times, 0.99),
        "max": max(times),
        "sql_p50": statistics.median(sql),
        "statements": statistics.median(statements),
    }


def explain(engine: Any, clock: SqlClock, client: Any, rounds: dict[str, str]) -> None:
    """The plan of the slowest statement of one request of each endpoint."""
    postgres = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    for name, url in rounds.items():
        clock.log = []
        client.get(url)
        log, clock.log = clock.log, None
        total = sum(entry[0] for entry in log) * 1000
        elapsed, statement, parameters, _ = max(
            (entry for entry in log if not entry[3]), key=lambda entry: entry[0]
        )
        print(
            f"\n--- {name}: {url}\n{len(log)} statements, {total:.1f} ms SQL; slowest "
            f"{elapsed * 1000:.1f} ms:"
        )
        shown = " ".join(statement.split())
        print(shown if len(shown) <= 900 else shown[:900] + " ...")
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(prefix + statement, parameters).all()
        for row in rows:
            line = row[0] if postgres else f"{row[0]:>3} {row[1]:>3} {row[3]}"
            print("  " + (line if len(line) <= 200 else line[:200] + " ..."))


def measure(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seed a database at `url`, then time every endpoint round by round."""
    from marco_svc import tokens
    from marco_svc.api import create_app
    from marco_svc.config import load_settings
    from marco_svc.runtime import open_runtime
    from marco_svc.service import Service

    settings = load_settings(env={}, data_dir=work / "data", database_url=url)
    runtime = open_runtime(settings, upgrade=True)  # migrate.upgrade(engine) on a new database
    try:
        seeded = seed(runtime, work, args.scores, args.inspections)
        full = [
            i + 1 for i in range(seeded["inspections"]) if (i + 1) * PER_INSPECTION <= args.scores
        ]
        _, secret = tokens.create(runtime.db, "lims", "bench-lims")
        client = create_app(Service(runtime)).test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
        gc.collect()
        gc.freeze()  # as `marco-svc serve` does once the app is built
        check(client, seeded)
        clock = SqlClock(runtime.db.engine)
        rng = random.Random(1)
        for _ in range(args.warmup):
            for path in urls(seeded, full, rng).values():
                client.get(path)
        times: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        sql: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        statements: dict[str, list[int]] = {name: [] for name in ENDPOINTS}
        items: dict[str, list[int]] = {name: [] for name in ENDPOINTS}
        load_before = os.getloadavg()[0]
        for _ in range(args.requests):
            for name, path in urls(seeded, full, rng).items():
                answer, ms, sql_ms, count = timed_get(client, clock, path)
                times[name].append(ms)
                sql[name].append(sql_ms)
                statements[name].append(count)
                body = answer.get_json()
                listed = next((v for v in body.values() if isinstance(v, list)), None)
                items[name].append(len(listed) if listed is not None else 1)
        if args.explain:
            explain(runtime.db.engine, clock, client, urls(seeded, full, random.Random(2)))
    finally:
        gc.unfreeze()
        runtime.close()
    result = {
        name: {
            **summary(times[name], sql[name], statements[name]),
            "items": statistics.mean(items[name]),
        }
        for name in ENDPOINTS
    }
    return {"seeded": seeded, "endpoints": result, "load": (load_before, os.getloadavg()[0])}


def report(backend: str, run: dict[str, Any], requests: int) -> None:
    s = run["seeded"]
    print(
        f"\n{backend}: {s['plates']} plates, {s['inspections']} inspections, "
        f"{s['images']:,} images, {s['scores']:,} scores ({s['hits']:,} hits), "
        f"loaded in {s['seconds']:.1f} s; {requests} requests per endpoint; load average "
        f"{run['load'][0]:.1f} before, {run['load'][1]:.1f} after (other processes show here)"
    )
    print(
        f"{'endpoint':<11} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'sql p50':>8} "
        f"{'stmts':>6} {'items':>6}  p99<={GOAL_MS:.0f}"
    )
    for name, e in run["endpoints"].items():
        ok = ("yes" if e["p99"] <= GOAL_MS else "NO") if name in GOALS else ""
        print(
            f"{name:<11} {e['p50']:>7.1f} {e['p90']:>7.1f} {e['p99']:>7.1f} {e['max']:>7.1f} "
            f"{e['sql_p50']:>8.1f} {e['statements']:>6.0f} {e['items']:>6.0f}  {ok}"
        )
    hits, named = run["endpoints"]["hits"], run["endpoints"]["hits_model"]
    print(
        f"hits with the default model / with model=: p50 {hits['p50'] / named['p50']:.2f}x "
        f"({hits['p50'] - named['p50']:+.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default=DEFAULT_SERVER, help=f"PostgreSQL server URL ({DEFAULT_SERVER})"
    )
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite too")
    parser.add_argument("--requests", type=int, default=300, help="per endpoint (300)")
    parser.add_argument("--warmup", type=int, default=10, help="rounds before timing (10)")
    parser.add_argument("--scores", type=int, default=100_000, help="stored scores (100000)")
    parser.add_argument("--inspections", type=int, default=4, help="per plate (4)")
    parser.add_argument("--explain", action="store_true", help="plans of the slowest queries")
    args = parser.parse_args()
    if args.scores < PER_INSPECTION:
        parser.error(f"--scores must be at least {PER_INSPECTION}")

    runs: dict[str, dict[str, Any]] = {}
    backends = (["pg"] if args.postgres else []) + (["sqlite"] if args.sqlite else [])
    if not backends:
        parser.error("nothing to run: give --postgres SERVER_URL or --sqlite")
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="marco-bench-") as tmp:
            work = Path(tmp)
            if backend == "sqlite":
                runs[backend] = measure(f"sqlite:///{work / 'bench.sqlite3'}", args, work)
            else:
                url, drop = scratch_postgres(args.postgres)
                try:
                    runs[backend] = measure(url, args, work)
                finally:
                    drop()
        report("postgresql" if backend == "pg" else "sqlite", runs[backend], args.requests)

    pairs: dict[str, Any] = {"scores": args.scores, "requests": args.requests}
    for backend, run in runs.items():
        endpoints = run["endpoints"]
        for name, e in endpoints.items():
            pairs[f"{backend}_{name}_p50_ms"] = round(e["p50"], 1)
            pairs[f"{backend}_{name}_p99_ms"] = round(e["p99"], 1)
        for name in GOALS:
            pairs[f"{backend}_{name}_p99_ok"] = "yes" if endpoints[name]["p99"] <= GOAL_MS else "no"
        hits, named = endpoints["hits"], endpoints["hits_model"]
        pairs[f"{backend}_hits_default_vs_model_p50"] = round(hits["p50"] / named["p50"], 2)
        pairs[f"{backend}_hits_default_extra_ms"] = round(hits["p50"] - named["p50"], 1)
    if "pg" in runs and "sqlite" in runs:
        for name in ENDPOINTS:
            ratio = runs["sqlite"]["endpoints"][name]["p99"] / runs["pg"]["endpoints"][name]["p99"]
            pairs[f"sqlite_vs_pg_{name}_p99"] = round(ratio, 2)
    print(" ".join(f"{key}={value}" for key, value in pairs.items()))


if __name__ == "__main__":
    main()
