"""Server time of the web page's plate page for a 96x2 and a 384x3 plate (goal: p99 < 300 ms
for 384x3) and of its drop page (goal: p99 < 150 ms; the page only, not the image,
thumbnails or heatmap its browser then loads), side by side in one run.

A scratch database is filled in bulk (executemany, no ingest): one model version registered
from a placeholder model folder and activated; plate WEB-96 (96 wells x 2 drops) and plate
WEB-384 (384 wells x 3 drops), `--inspections` (5) a week apart each; every image scored
(four-way probabilities, ~4% hits, ~2% with a quality flag, quality checks as the scorer
stores them); ~8% of the images labelled by a person on the MARCO scale, a quarter of those
relabelled (the grid shows the latest). A scientist token signs in through the page's form
(POST /signin, session cookie), then the app (`create_app(Service(runtime))`) answers through
Flask's test client in this process (server time, no network); what start-up loaded is
moved out of the garbage collector's full passes with `gc.freeze()`, as `marco-svc serve`
does (`--no-gc-freeze`: not, and full passes add ~60 ms to the 384x3 page at p50). Each
round asks each page once, in turn, so they share the machine's noise:

    plate96    /plates/WEB-96?inspection=<newest>   (192 cells, best over 5 inspections)
    plate384   /plates/WEB-384?inspection=<newest>  (1,152 cells)
    drop       /drops/<random image of WEB-384's newest inspection>

Per page: p50 / p90 / p99 / max ms of the whole request, the p50 of its SQL time (cursor
execute; SQLite steps rows while they are fetched, so partly outside it) and statements per
request, and the page's size; the plate pages carry their grid as JSON (`<script
id="grid-data">`), whose size is printed too. `--profile` then runs a few requests of each
page under cProfile (the functions with the most own time, and the service's functions by
cumulative time) and prints the SQL statements of one request by time.

    python bench/web_pages.py [--postgres [SERVER_URL]] [--requests 50] [--warmup 5]
                              [--inspections 5] [--profile] [--no-gc-freeze]

SQLite always; `--postgres` also runs PostgreSQL (SERVER_URL defaults to
postgresql+psycopg://postgres@127.0.0.1:5432; a scratch database is created, VACUUM ANALYZEd
after the load, and dropped, even on error). The LAST line is key=value pairs:
`<db>_<page>_p50_ms=` and `_p99_ms=` for each page (db: sqlite, pg),
`<db>_plate384_vs_plate96_p50=` (the ratio), `<db>_plate384_p99_ok=` (yes when < 300 ms),
`<db>_drop_p99_ok=` (yes when < 150 ms), `plate384_html_kb=`, `plate384_grid_json_kb=` and
`gc_freeze=`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import random
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_latency import (  # noqa: E402  (the scratch database, model folder and SQL clock)
    DEFAULT_SERVER,
    SqlClock,
    active_bench_model,
    chunks,
    scratch_postgres,
    summary,
    timed_get,
)

PLATES = (("WEB-96", 96, 2), ("WEB-384", 384, 3))
PAGES = ("plate96", "plate384", "drop")
GOALS_MS = {"plate384": 300.0, "drop": 150.0}
START = datetime(2024, 3, 4, 8)
HIT_RATE, FLAG_RATE, HUMAN_RATE, RELABEL_RATE = 0.04, 0.02, 0.08, 0.25
GRID_DATA = re.compile(r'<script type="application/json" id="grid-data">(.*?)</script>', re.S)


def seed(runtime: Any, work: Path, per_plate: int) -> dict[str, Any]:
    """The two plates, their inspections, images, scores and human scores, in bulk."""
    from sqlalchemy import insert, text, update

    from imager_adapters.wells import plate_type, well_name
    from marco_svc.db.models import (
        Drop,
        FeedCounter,
        HumanScore,
        Image,
        Inspection,
        Plate,
        Score,
    )
    from marco_svc.labels import MARCO4_LABELS
    from marco_svc.scoring.lab_rules import LabRules
    from marco_svc.scoring.rules import decide

    model_id, points, _ = active_bench_model(runtime, work)
    rule = LabRules.parse("threshold:0.5").default
    rng = random.Random(0)
    rows: dict[Any, list[dict[str, Any]]] = {
        t: [] for t in (Plate, Drop, Inspection, Image, Score, HumanScore)
    }
    newest: dict[str, list[int]] = {}  # barcode -> image ids of its newest inspection
    inspection_ids: dict[str, int] = {}
    human_seq = 0

    def quality(flagged: bool) -> dict[str, Any]:
        checks = {
            name: {"flag": flagged and name == "out_of_focus", "value": round(rng.random(), 4),
                   "limit": 0.5}
            for name in ("too_dark", "overexposed", "out_of_focus", "no_drop", "drop_cut_off")
        }  # fmt: skip
        return {"flags": ["out_of_focus"] if flagged else [], "checks": checks, "drop": None}

    for p, (barcode, wells, drops) in enumerate(PLATES, start=1):
        kind = plate_type(wells, drops)
        rows[Plate].append(
            {"id": p, "barcode": barcode, "wells": wells, "drops": drops, "wells_inferred": False,
             "drops_inferred": False, "created_at": START}
        )  # fmt: skip
        first_drop = len(rows[Drop]) + 1
        for row in range(kind.rows):
            for column in range(1, kind.columns + 1):
                for d in range(1, drops + 1):
                    rows[Drop].append(
                        {"id": len(rows[Drop]) + 1, "plate_id": p, "well": well_name(row, column),
                         "drop_number": d, "row_index": row, "column_number": column}
                    )  # fmt: skip
        for k in range(per_plate):
            at = START + timedelta(days=7 * k, minutes=30 * p)
            inspection_id = len(rows[Inspection]) + 1
            rows[Inspection].append(
                {"id": inspection_id, "plate_id": p, "imaged_at": at, "imager": "bench-imager",
                 "external_id": None, "created_at": at}
            )  # fmt: skip
            ids = []
            for drop_id in range(first_drop, len(rows[Drop]) + 1):
                image_id = len(rows[Image]) + 1
                ids.append(image_id)
                rows[Image].append(
                    {"id": image_id, "inspection_id": inspection_id, "drop_id": drop_id,
                     "uri": f"/nonexistent/bench/{barcode}/{k}/{drop_id}.jpg",
                     "sha256": f"{image_id:064x}", "size_bytes": 250_000, "width": 1024,
                     "height": 1024, "imaging_mode": "visible", "version": 1,
                     "adapter": "bench", "status": "scored", "error": None, "created_at": at,
                     "updated_at": at}
                )  # fmt: skip
                if rng.random() < HIT_RATE:
                    crystals = rng.uniform(0.55, 0.95)
                    probs = {c: (1 - crystals) / 3 for c in MARCO4_LABELS} | {"Crystals": crystals}
                else:
                    crystals = rng.uniform(0.0, 0.4)
                    probs = {c: (1 - crystals) / 4 for c in MARCO4_LABELS} | {"Crystals": crystals}
                    probs[rng.choice(("Clear", "Other", "Precipitate"))] += (1 - crystals) / 4
                decision = decide(probs, rule, points)
                scored = at + timedelta(minutes=5)
                rows[Score].append(
                    {"id": image_id, "image_id": image_id, "model_version_id": model_id,
                     "probabilities": probs, "top_class": max(probs, key=probs.get),
                     "p_crystal": decision.p_crystal, "hit": decision.hit,
                     "rule": decision.rule, "quality": quality(rng.random() < FLAG_RATE),
                     "latency_ms": 40.0, "source": "server", "feed_seq": image_id,
                     "created_at": scored, "updated_at": scored}
                )  # fmt: skip
                if rng.random() < HUMAN_RATE:
                    for n in range(2 if rng.random() < RELABEL_RATE else 1):
                        human_seq += 1
                        labelled = at + timedelta(days=1, minutes=n)
                        rows[HumanScore].append(
                            {"id": human_seq, "image_id": image_id, "feed_seq": human_seq,
                             "label": rng.choice(MARCO4_LABELS), "scheme": "marco4",
                             "who": "bench", "source": "web", "created_at": labelled,
                             "updated_at": labelled}
                        )  # fmt: skip
            newest[barcode], inspection_ids[barcode] = ids, inspection_id

    start = time.perf_counter()
    engine = runtime.db.engine
    with engine.begin() as connection:
        for model_class, table_rows in rows.items():
            for batch in chunks(iter(table_rows)):
                connection.execute(insert(model_class.__table__), batch)
        for feed, value in (("scores", len(rows[Score])), ("human_scores", human_seq)):
            bump = update(FeedCounter.__table__).where(FeedCounter.name == feed)
            if connection.execute(bump.values(value=value)).rowcount == 0:
                connection.execute(insert(FeedCounter.__table__).values(name=feed, value=value))
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("plates", "drops", "inspections", "images", "scores", "human_scores"):
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
        "images": len(rows[Image]),
        "hits": sum(1 for row in rows[Score] if row["hit"]),
        "humans": human_seq,
        "seconds": time.perf_counter() - start,
        "newest": newest,
        "inspections": inspection_ids,
    }


def urls(seeded: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """One URL per page for the next round."""
    ins = seeded["inspections"]
    return {
        "plate96": f"/plates/WEB-96?inspection={ins['WEB-96']}",
        "plate384": f"/plates/WEB-384?inspection={ins['WEB-384']}",
        "drop": f"/drops/{rng.choice(seeded['newest']['WEB-384'])}",
    }


def grid_data(html: bytes) -> bytes:
    match = GRID_DATA.search(html.decode())
    if match is None:
        raise SystemExit("the plate page has no grid-data script")
    return match.group(1).encode()


def check(client: Any, seeded: dict[str, Any], per_plate: int) -> dict[str, float]:
    """The pages answer what the bench means to measure; the plate pages' sizes."""
    sizes: dict[str, float] = {}
    for name, url in urls(seeded, random.Random(0)).items():
        answer = client.get(url)
        if answer.status_code != 200:
            raise SystemExit(f"{url}: {answer.status_code} {answer.get_data()[:300]!r}")
        html = answer.get_data()
        sizes[f"{name}_html_kb"] = len(html) / 1024
        if name == "drop":
            strip = re.search(rb'<ol class="strip">(.*?)</ol>', html, re.S)
            if strip is None or strip.group(1).count(b"<li ") != per_plate:
                raise SystemExit(f"{url}: the history strip has not {per_plate} inspections")
            continue
        data = grid_data(html)
        sizes[f"{name}_grid_json_kb"] = len(data) / 1024
        cells = json.loads(data)["cells"]
        wells, drops = {"plate96": (96, 2), "plate384": (384, 3)}[name]
        scored = [c for c in cells if c["four"] and c["best_p_crystal"] is not None]
        if len(cells) != wells * drops or len(scored) != len(cells):
            raise SystemExit(f"{url}: {len(cells)} cells, {len(scored)} scored")
        if not any(c["human"] for c in cells) or not any(c["ever_hit"] for c in cells):
            raise SystemExit(f"{url}: no human labels or no hits over time in the grid")
    return sizes


def profile(clock: SqlClock, client: Any, seeded: dict[str, Any]) -> None:
    """cProfile over a few requests of each page, and one request's SQL by time."""
    for name, url in urls(seeded, random.Random(3)).items():
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            client.get(url)
        profiler.disable()
        clock.log = []
        start = time.perf_counter()
        client.get(url)
        total = (time.perf_counter() - start) * 1000
        log, clock.log = clock.log, None
        sql = sum(entry[0] for entry in log) * 1000
        print(f"\n--- {name}: {url} (profiled x5); one request {total:.1f} ms, SQL {sql:.1f} ms")
        for elapsed, statement, _, _ in sorted(log, key=lambda entry: -entry[0])[:6]:
            shown = " ".join(statement.split())
            print(f"  {elapsed * 1000:7.2f} ms  {shown[:170]}")
        for sort, restrict, what in (
            ("tottime", (14,), "own time"),
            ("cumulative", ("marco_svc/", 14), "cumulative, marco_svc"),
        ):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(*restrict)
            lines = out.getvalue().replace(f"{ROOT}/", "").splitlines()
            header = next(i for i, line in enumerate(lines) if "ncalls" in line)
            print(f"  by {what}, 5 requests:")
            for line in lines[header:]:
                if line.strip():
                    print("    " + re.sub(r"\S*/(site-packages|lib/python[\d.]+)/", "", line))


def measure(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seed a database at `url`, sign in, then time every page round by round."""
    from marco_svc import tokens
    from marco_svc.api import create_app
    from marco_svc.config import load_settings
    from marco_svc.runtime import open_runtime
    from marco_svc.service import Service

    settings = load_settings(env={}, data_dir=work / "data", database_url=url)
    runtime = open_runtime(settings, upgrade=True)
    try:
        seeded = seed(runtime, work, args.inspections)
        _, secret = tokens.create(runtime.db, "scientist", "bench-scientist")
        client = create_app(Service(runtime)).test_client()
        if not args.no_gc_freeze:  # as `marco-svc serve` does once the app is built
            gc.collect()
            gc.freeze()
        signed = client.post("/signin", data={"token": secret})
        if signed.status_code != 302 or not signed.headers["Location"].endswith("/plates"):
            raise SystemExit(f"sign-in answered {signed.status_code}")
        sizes = check(client, seeded, args.inspections)
        clock = SqlClock(runtime.db.engine)
        rng = random.Random(1)
        for _ in range(args.warmup):
            for path in urls(seeded, rng).values():
                client.get(path)
        times: dict[str, list[float]] = {name: [] for name in PAGES}
        sql: dict[str, list[float]] = {name: [] for name in PAGES}
        statements: dict[str, list[int]] = {name: [] for name in PAGES}
        load_before = os.getloadavg()[0]
        for _ in range(args.requests):
            for name, path in urls(seeded, rng).items():
                _, ms, sql_ms, count = timed_get(client, clock, path)
                times[name].append(ms)
                sql[name].append(sql_ms)
                statements[name].append(count)
        load_after = os.getloadavg()[0]
        if args.profile:
            profile(clock, client, seeded)
    finally:
        gc.unfreeze()
        runtime.close()
    pages = {name: summary(times[name], sql[name], statements[name]) for name in PAGES}
    return {"seeded": seeded, "pages": pages, "sizes": sizes, "load": (load_before, load_after)}


def report(backend: str, run: dict[str, Any], requests: int) -> None:
    s, sizes = run["seeded"], run["sizes"]
    print(
        f"\n{backend}: 2 plates, {s['images']:,} images scored ({s['hits']} hits), "
        f"{s['humans']} human scores, loaded in {s['seconds']:.1f} s; {requests} requests per "
        f"page; load average {run['load'][0]:.1f} before, {run['load'][1]:.1f} after"
    )
    print(
        f"{'page':<9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'sql p50':>8} "
        f"{'stmts':>6} {'html KB':>8}  goal"
    )
    for name, e in run["pages"].items():
        goal = GOALS_MS.get(name)
        ok = f"p99<{goal:.0f}: {'yes' if e['p99'] < goal else 'NO'}" if goal else ""
        print(
            f"{name:<9} {e['p50']:>7.1f} {e['p90']:>7.1f} {e['p99']:>7.1f} {e['max']:>7.1f} "
            f"{e['sql_p50']:>8.1f} {e['statements']:>6.0f} {sizes[f'{name}_html_kb']:>8.1f}  {ok}"
        )
    print(
        f"grid JSON: plate96 {sizes['plate96_grid_json_kb']:.1f} KB, "
        f"plate384 {sizes['plate384_grid_json_kb']:.1f} KB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_SERVER,
        default=None,
        help=f"also run on PostgreSQL (SERVER_URL, default {DEFAULT_SERVER})",
    )
    parser.add_argument("--requests", type=int, default=50, help="per page (50)")
    parser.add_argument("--warmup", type=int, default=5, help="rounds before timing (5)")
    parser.add_argument("--inspections", type=int, default=5, help="per plate (5)")
    parser.add_argument("--profile", action="store_true", help="cProfile and SQL by statement")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave start-up objects in the collector's full passes (serve freezes them)",
    )
    args = parser.parse_args()
    if args.inspections < 1 or args.requests < 1:
        parser.error("--inspections and --requests must be at least 1")

    runs: dict[str, dict[str, Any]] = {}
    for backend in ["sqlite"] + (["pg"] if args.postgres else []):
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

    pairs: dict[str, Any] = {
        "requests": args.requests,
        "inspections": args.inspections,
        "gc_freeze": "no" if args.no_gc_freeze else "yes",
    }
    for backend, run in runs.items():
        pages = run["pages"]
        for name, e in pages.items():
            pairs[f"{backend}_{name}_p50_ms"] = round(e["p50"], 1)
            pairs[f"{backend}_{name}_p99_ms"] = round(e["p99"], 1)
        ratio = pages["plate384"]["p50"] / pages["plate96"]["p50"]
        pairs[f"{backend}_plate384_vs_plate96_p50"] = round(ratio, 2)
        for name, goal in GOALS_MS.items():
            pairs[f"{backend}_{name}_p99_ok"] = "yes" if pages[name]["p99"] < goal else "no"
    sizes = runs["sqlite"]["sizes"]
    pairs["plate384_html_kb"] = round(sizes["plate384_html_kb"], 1)
    pairs["plate384_grid_json_kb"] = round(sizes["plate384_grid_json_kb"], 1)
    print(" ".join(f"{key}={value}" for key, value in pairs.items()))


if __name__ == "__main__":
    main()
