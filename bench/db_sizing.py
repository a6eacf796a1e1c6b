"""PostgreSQL sizing at 1,000,000 scores: table and index sizes, bytes per score, the hot
queries' plans and times, and a linear extrapolation to 10M and 100M scores.

A scratch database gets the real schema (`marco_svc.db.migrate.upgrade`) and is filled in
SQL (INSERT ... SELECT over generate_series, no Python rows) in the shapes production
writes: `--wells` x `--drops` plates (96x3) set up at a steady pace (`--images-per-day`,
20,000: ten imagers) and imaged on a Fibonacci schedule (days 0,1,2,3,5,8,13,21), so
inspections and images are in time order and a plate's images are spread over weeks;
image paths as an imager names them, real sha256 hex, every 500th image failed with its
reason, the last `--backlog` (2,000) still new; one active model whose score of every
scored image carries the probabilities, rule and quality JSON the scorer stores (~3%
hits, each with one cached heatmap row). The table is then VACUUM ANALYZEd (what
autovacuum does soon after a load).

Reported:

- per table: rows, heap, TOAST (+ free-space and visibility maps), indexes, total
  (`pg_relation_size`, `pg_table_size`, `pg_indexes_size`, `pg_total_relation_size`);
  per index: `pg_relation_size`; bytes per score row (the scores table) and per scored
  image (every table);
- the hot queries, through the project's own functions on a SQLAlchemy session, so the SQL
  is the service's: the hits feed page (`feed.scores_since`, hits of the active model, 100
  per page, at a random position and near the end), a plate's counts
  (`listing.find_plate` + `listing.plate_overview`, a random plate) and what is pending
  (`scoring.store.pending_images`, 1 as the idle scorer asks and a batch of 16): median,
  min and max ms of `--runs` runs after a warm-up, and EXPLAIN (ANALYZE, BUFFERS) of each
  one's slowest statement;
- sizes at 10M and 100M scores (linear: heap and B-tree indexes grow with rows), against
  this machine's RAM and `--ram-gib` (a database server's), and the PostgreSQL settings
  that matter (shared_buffers, autovacuum).

    python bench/db_sizing.py [--postgres SERVER_URL] [--scores 1000000] [--runs 15]
                              [--wells 96] [--drops 3] [--backlog 2000] [--keep]

SERVER_URL defaults to postgresql+psycopg://postgres@127.0.0.1:5432 (a scratch database is
created, and dropped unless `--keep`). The LAST line is key=value pairs (`scores_mb=`,
`bytes_per_score=`, `bytes_per_scored_image_all_tables=`, `hits_p50_ms=`, `plate_p50_ms=`,
`pending1_p50_ms=`, `db_gb_at_10m=`, `db_gb_at_100m=`, ...).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_latency import DEFAULT_SERVER, SqlClock  # noqa: E402  (SQL statement capture)
from ingest_burst import scratch_postgres  # noqa: E402  (a throw-away database)

SCHEDULE_DAYS = (0, 1, 2, 3, 5, 8, 13, 21)
COLUMNS = {96: 12, 384: 24}
START = datetime(2023, 1, 2, 8)
HIT_RATE = 0.03
FAILED_EVERY = 500
MODEL = ("sizing-marco", "1")
TARGETS = (10_000_000, 100_000_000)
SETTINGS = (
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "autovacuum_max_workers",
    "autovacuum_naptime",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_cost_limit",
)
HOT_INDEXES = (
    "ix_scores_model_hit_feed",
    "uq_scores_feed_seq",
    "uq_scores_image_id",
    "pk_images",
    "ix_images_inspection_id",
    "ix_images_status",
)
GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Shape:
    """What is generated: plate layout, pace, and how many images of each status."""

    wells: int
    drops: int
    images_per_day: int
    scores: int
    backlog: int

    @property
    def slots(self) -> int:
        return self.wells * self.drops

    @property
    def scored_upto(self) -> int:
        """The last image id of the scored stretch (every FAILED_EVERY-th of it failed)."""
        last = self.scores
        while last - last // FAILED_EVERY < self.scores:
            last += 1
        return last

    @property
    def images(self) -> int:
        return self.scored_upto + self.backlog

    @property
    def inspections(self) -> int:
        return math.ceil(self.images / self.slots)

    @property
    def plate_seconds(self) -> float:
        """Seconds between two plates set up, so the imagers make `images_per_day`."""
        return 86400 * self.slots * len(SCHEDULE_DAYS) / self.images_per_day

    @property
    def plates(self) -> int:
        """Plates whose first inspections are among the first `inspections` in time order
        (plates are set up in id order, so they are 1..N; the newest have had only their
        first inspections)."""
        tail = max(SCHEDULE_DAYS) * 86400 / self.plate_seconds
        bound = math.ceil(self.inspections / len(SCHEDULE_DAYS) + tail) + 1
        planned = sorted(
            (p * self.plate_seconds + day * 86400, p)
            for p in range(1, bound + 1)
            for day in SCHEDULE_DAYS
        )
        return max(p for _, p in planned[: self.inspections])


def step(engine: Any, name: str, sql: str, params: dict[str, Any] | None = None) -> float:
    """Run one statement in its own transaction; print and return its seconds."""
    from sqlalchemy import text

    start = time.perf_counter()
    with engine.begin() as connection:
        rows = connection.execute(text(sql), params or {}).rowcount
    seconds = time.perf_counter() - start
    print(f"  {name:<28} {rows:>10,} rows {seconds:7.1f} s", flush=True)
    return seconds


def add_model(engine: Any) -> int:
    """The one active model version the scores belong to; its id."""
    from sqlalchemy import insert

    from marco_svc.db.models import ModelVersion

    values = {
        "name": MODEL[0],
        "version": MODEL[1],
        "architecture": "marco-inception-v3",
        "scheme": "marco4",
        "labels": ["Clear", "Crystals", "Other", "Precipitate"],
        "artifact_uri": "/var/lib/marco-svc/models/sizing-marco/1",
        "artifact_sha256": "0" * 64,
        "card": {"operating_points": {}},
        "metrics": {},
        "active": True,
        "created_at": START,
    }
    with engine.begin() as connection:
        table = ModelVersion.__table__
        return connection.execute(insert(table).values(values).returning(table.c.id)).scalar_one()


PLATES_SQL = """
INSERT INTO plates (id, barcode, wells, drops, wells_inferred, drops_inferred, created_at)
SELECT p, 'SZ' || lpad(p::text, 7, '0'), :wells, :drops, false, false,
       CAST(:start AS timestamp) + (p - 1) * make_interval(secs => :plate_seconds)
FROM generate_series(1, :plates) AS p
"""

DROPS_SQL = """
INSERT INTO drops (id, plate_id, well, drop_number, row_index, column_number)
SELECT (p - 1) * :slots + s + 1, p,
       chr(65 + (s / :drops) / :columns) || ((s / :drops) % :columns + 1),
       s % :drops + 1, (s / :drops) / :columns, (s / :drops) % :columns + 1
FROM generate_series(1, :plates) AS p, generate_series(0, :slots - 1) AS s
ORDER BY p, s
"""

INSPECTIONS_SQL = """
INSERT INTO inspections (id, plate_id, imaged_at, imager, external_id, created_at)
SELECT n, plate_id, at, 'imager-' || (plate_id % 10 + 1), NULL, at
FROM (SELECT row_number() OVER (ORDER BY at, plate_id) AS n, plate_id, at
      FROM (SELECT pl.id AS plate_id, pl.created_at + make_interval(days => d) AS at
            FROM plates pl CROSS JOIN unnest(CAST(:days AS int[])) AS d) AS planned
     ) AS ordered
WHERE n <= :inspections
"""

IMAGES_SQL = """
INSERT INTO images (id, inspection_id, drop_id, uri, sha256, size_bytes, width, height,
                    imaging_mode, version, adapter, status, error, created_at, updated_at)
SELECT n, i.id, d.id,
       '/data/RockImager/' || pl.barcode || '/' || to_char(i.imaged_at, 'YYYYMMDD_HH24MISS')
         || '/' || pl.barcode || '_' || d.well || '_' || d.drop_number || '.jpg',
       encode(sha256(n::text::bytea), 'hex'), 180000 + (random() * 120000)::int, 1280, 1024,
       'visible', 1, 'formulatrix',
       CASE WHEN n > :scored_upto THEN 'new' WHEN n % :failed_every = 0 THEN 'failed'
            ELSE 'scored' END,
       CASE WHEN n <= :scored_upto AND n % :failed_every = 0
            THEN 'corrupt image data: broken data stream when reading image file' END,
       i.imaged_at + interval '2 minutes', i.imaged_at + interval '6 minutes'
FROM inspections i
JOIN plates pl ON pl.id = i.plate_id
CROSS JOIN generate_series(0, :slots - 1) AS s
JOIN drops d ON d.id = (i.plate_id - 1) * :slots + s + 1
CROSS JOIN LATERAL (SELECT (i.id - 1) * :slots + s + 1 AS n) AS k
WHERE n <= :images
ORDER BY n
"""

# The JSON as the scorer writes it (Python's json: '": ' and ', ' separators).
PROBABILITIES = '{"Clear": %s, "Crystals": %s, "Other": %s, "Precipitate": %s}'
RULE = '{"kind": "threshold", "k": 3, "threshold": 0.5, "operating_point": null}'
QUALITY = (
    '{"flags": [], "checks": {'
    '"too_dark": {"flag": false, "value": %s, "limit": 50.0}, '
    '"overexposed": {"flag": false, "value": %s, "limit": 0.25}, '
    '"out_of_focus": {"flag": false, "value": %s, "limit": 20.0}, '
    '"no_drop": {"flag": false, "value": %s, "limit": 0.03}, '
    '"drop_cut_off": {"flag": false, "value": %s, "limit": 0.5}}, '
    '"drop": {"cx": %s, "cy": %s, "radius": %s, "area_fraction": %s, "circularity": %s, '
    '"touches_border": false}}'
)

SCORES_SQL = f"""
INSERT INTO scores (id, image_id, model_version_id, probabilities, top_class, p_crystal, hit,
                    rule, quality, latency_ms, source, feed_seq, created_at, updated_at)
SELECT n, image_id, :model,
       CAST(format('{PROBABILITIES}', clear, c, other, precip) AS json),
       CASE WHEN c >= greatest(clear, other, precip) THEN 'Crystals'
            WHEN clear >= greatest(other, precip) THEN 'Clear'
            WHEN other >= precip THEN 'Other' ELSE 'Precipitate' END,
       c, c >= 0.5, CAST('{RULE}' AS json),
       CAST(format('{QUALITY}', round(90 + 40 * q, 4), round(q / 500, 4),
                   round(60 + 40 * q, 4), round(0.3 + q / 5, 4), round(0.85 + q / 10, 3),
                   round(640 + 20 * q, 1), round(512 + 20 * q, 1), round(380 + 30 * q, 1),
                   round(0.3 + q / 5, 4), round(0.85 + q / 10, 3)) AS json),
       round(35 + 15 * q, 2), 'server', n,
       created_at + interval '1 minute', created_at + interval '1 minute'
FROM (SELECT row_number() OVER (ORDER BY image_id) AS n, image_id, created_at, c, q,
             (1 - c) * a / (a + b + e) AS clear, (1 - c) * b / (a + b + e) AS other,
             (1 - c) * e / (a + b + e) AS precip
      FROM (SELECT id AS image_id, created_at,
                   CASE WHEN random() < :hit_rate THEN 0.55 + 0.4 * random()
                        ELSE 0.4 * random() END AS c,
                   random() AS a, random() AS b, random() AS e,
                   CAST(random() AS numeric) AS q
            FROM images WHERE status = 'scored') AS draws
     ) AS split
ORDER BY n
"""

HEATMAPS_SQL = """
INSERT INTO heatmaps (image_id, model_version_id, class_label, params_key, params, path,
                      created_at)
SELECT image_id, model_version_id, 'Crystals', '5f1e0c9a2b7d4e31',
       CAST('{"n": 50, "sigma_fraction": 0.15, "batch_size": 10, "seed": 0}' AS json),
       '/var/lib/marco-svc/heatmaps/' || image_id || '/' || model_version_id
         || '-Crystals-5f1e0c9a2b7d4e31.png',
       updated_at + interval '10 minutes'
FROM scores WHERE hit
"""

FINISH_SQL = """
UPDATE feed_counters SET value = (SELECT coalesce(max(feed_seq), 0) FROM scores)
WHERE name = 'scores'
"""


def fill(engine: Any, shape: Shape, model_id: int) -> dict[str, float]:
    """Every table in SQL, step by step; seconds per step."""
    params = {
        "wells": shape.wells,
        "drops": shape.drops,
        "slots": shape.slots,
        "columns": COLUMNS[shape.wells],
        "plates": shape.plates,
        "plate_seconds": shape.plate_seconds,
        "start": START,
        "days": list(SCHEDULE_DAYS),
        "inspections": shape.inspections,
        "images": shape.images,
        "scored_upto": shape.scored_upto,
        "failed_every": FAILED_EVERY,
        "model": model_id,
        "hit_rate": HIT_RATE,
    }
    steps = (
        ("plates", PLATES_SQL),
        ("drops", DROPS_SQL),
        ("inspections", INSPECTIONS_SQL),
        ("images", IMAGES_SQL),
        ("scores", SCORES_SQL),
        ("heatmaps (hits)", HEATMAPS_SQL),
        ("feed counter", FINISH_SQL),
    )
    seconds = {name: step(engine, name, sql, params) for name, sql in steps}
    check_counts(engine, shape)
    for table in ("plates", "drops", "inspections", "images", "scores"):
        step(
            engine,
            f"sequence of {table}",
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT max(id) FROM {table}))",
        )
    return seconds


def check_counts(engine: Any, shape: Shape) -> None:
    """The fill made the images and scores it was asked for (else the shape is wrong)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        images = connection.scalar(text("SELECT count(*) FROM images"))
        scores = connection.scalar(text("SELECT count(*) FROM scores"))
    if (images, scores) != (shape.images, shape.scores):
        raise SystemExit(
            f"filled {images:,} images, {scores:,} scores; expected "
            f"{shape.images:,}, {shape.scores:,}"
        )


def vacuum_analyze(engine: Any) -> float:
    """VACUUM ANALYZE every table (outside a transaction); seconds."""
    from sqlalchemy import text

    start = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - start


TABLES_SQL = """
SELECT c.relname, pg_relation_size(c.oid), pg_table_size(c.oid) - pg_relation_size(c.oid),
       pg_indexes_size(c.oid), pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'alembic_version'
ORDER BY pg_total_relation_size(c.oid) DESC
"""

INDEXES_SQL = """
SELECT t.relname, i.relname, pg_relation_size(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND t.relname <> 'alembic_version'
ORDER BY pg_relation_size(i.oid) DESC
"""


COLUMNS_SQL = """
SELECT avg(pg_column_size(s.*)) AS row, avg(pg_column_size(probabilities)) AS probabilities,
       avg(pg_column_size(rule)) AS rule, avg(pg_column_size(quality)) AS quality
FROM scores s
"""


def sizes(engine: Any) -> dict[str, Any]:
    """Per table: rows, heap, toast (+maps), indexes, total bytes; per index: bytes."""
    from sqlalchemy import text

    with engine.connect() as connection:
        tables = {
            name: {"heap": heap, "toast": toast, "indexes": indexes, "total": total}
            for name, heap, toast, indexes, total in connection.execute(text(TABLES_SQL))
        }
        for name, table in tables.items():
            table["rows"] = connection.scalar(text(f'SELECT count(*) FROM "{name}"'))
        indexes = [tuple(row) for row in connection.execute(text(INDEXES_SQL))]
        database = connection.scalar(text("SELECT pg_database_size(current_database())"))
        columns = connection.execute(text(COLUMNS_SQL)).one()._asdict()
    return {"tables": tables, "indexes": indexes, "database": database, "columns": columns}


def server_settings(engine: Any) -> dict[str, str]:
    """The PostgreSQL settings that sizing and vacuuming depend on."""
    from sqlalchemy import text

    with engine.connect() as connection:
        return {name: connection.scalar(text(f"SHOW {name}")) for name in SETTINGS}


def ram_bytes() -> int:
    """This machine's memory (MemTotal)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class HotQuery:
    """One hot query: a name, what it does, and a function of (session, rng) that runs it
    through the project's code and returns how many rows it answered."""

    name: str
    what: str
    run: Callable[[Any, random.Random], int]


def hot_queries(db: Any, model_id: int) -> list[HotQuery]:
    """The hits feed page, a plate's counts and what is pending, as the service asks."""
    from sqlalchemy import func, select

    from marco_svc import feed, listing
    from marco_svc.db.models import Plate, Score
    from marco_svc.scoring.store import pending_images

    with db.session() as session:
        feed_end = session.scalar(select(func.max(Score.feed_seq)))
        barcodes = list(session.scalars(select(Plate.barcode)))
    hits = feed.FeedFilter(model_version_id=model_id, hits_only=True)

    def hits_page(session: Any, rng: random.Random) -> int:
        return len(feed.scores_since(session, rng.randrange(feed_end), 100, hits, False)["items"])

    def hits_head(session: Any, rng: random.Random) -> int:
        since = rng.randrange(max(feed_end - 1000, 0), feed_end)
        return len(feed.scores_since(session, since, 100, hits, False)["items"])

    def plate(session: Any, rng: random.Random) -> int:
        overview = listing.plate_overview(
            session, listing.find_plate(session, rng.choice(barcodes))
        )
        return sum(overview["images"].values())

    def pending(limit: int) -> Callable[[Any, random.Random], int]:
        return lambda session, _rng: len(pending_images(session, model_id, limit))

    found = [
        HotQuery("hits", "feed.scores_since: 100 hits after a random position", hits_page),
        HotQuery("hits_head", "feed.scores_since: hits after one of the newest 1,000", hits_head),
        HotQuery("plate", "listing.find_plate + plate_overview of a random plate", plate),
        HotQuery("pending1", "scoring.store.pending_images(limit=1): the idle check", pending(1)),
        HotQuery("pending16", "scoring.store.pending_images(limit=16): one batch", pending(16)),
    ]
    return found + dispatch_queries(db, model_id)


def dispatch_queries(db: Any, model_id: int) -> list[HotQuery]:
    """A task's pending check (`pending_images(among=)`) and the dispatcher's walk
    (`pending_ids_after`), where this version of scoring.store has them."""
    import inspect

    from sqlalchemy import select

    from marco_svc.db.models import Image
    from marco_svc.scoring import store

    with db.session() as session:
        backlog = list(session.scalars(select(Image.id).where(Image.status == "new").limit(16)))
    queries = []
    if "among" in inspect.signature(store.pending_images).parameters:
        queries.append(
            HotQuery(
                "among16",
                "scoring.store.pending_images(among=16 new ids): a task's images",
                lambda session, _rng: len(store.pending_images(session, model_id, 16, backlog)),
            )
        )
    walk = getattr(store, "pending_ids_after", None)
    if walk is not None:
        queries.append(
            HotQuery(
                "walk0",
                "scoring.store.pending_ids_after(0, limit=500): a dispatcher's first page",
                lambda session, _rng: len(walk(session, model_id, 0, 500)),
            )
        )
    return queries


def time_query(db: Any, clock: SqlClock, query: HotQuery, runs: int) -> dict[str, float]:
    """Median, min and max ms of `runs` runs (after two warm-up runs), rows and statements."""
    rng = random.Random(7)
    times, rows = [], 0
    for n in range(runs + 2):
        clock.statements = 0
        start = time.perf_counter()
        with db.session() as session:
            rows = query.run(session, rng)
        if n >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return {
        "p50": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "rows": rows,
        "statements": clock.statements,
    }


def explain(db: Any, clock: SqlClock, query: HotQuery) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the slowest statement of one run of `query`."""
    clock.log = []
    with db.session() as session:
        query.run(session, random.Random(11))
    log, clock.log = clock.log, None
    elapsed, statement, parameters, _ = max(
        (entry for entry in log if not entry[3]), key=lambda entry: entry[0]
    )
    shown = " ".join(statement.split())
    print(
        f"\n--- {query.name}: {query.what}; {len(log)} statements, slowest {elapsed * 1000:.1f} ms"
    )
    print(shown if len(shown) <= 700 else shown[:700] + " ...")
    with db.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        ).all()
    for (line,) in plan:
        print("  " + (line if len(line) <= 160 else line[:160] + " ..."))


def mb(value: float) -> str:
    return f"{value / MIB:,.1f}"


def report_sizes(found: dict[str, Any], scores: int) -> dict[str, float]:
    """The tables and indexes, and bytes per score; the figures extrapolation needs."""
    tables = found["tables"]
    columns = ("heap MB", "toast MB", "index MB", "total MB")
    print(f"\n{'table':<16} {'rows':>11} " + " ".join(f"{c:>9}" for c in columns))
    for name, t in tables.items():
        print(
            f"{name:<16} {t['rows']:>11,} {mb(t['heap']):>9} {mb(t['toast']):>9} "
            f"{mb(t['indexes']):>9} {mb(t['total']):>9}"
        )
    print(f"{'database':<16} {'':>11} {'':>9} {'':>9} {'':>9} {mb(found['database']):>9}")
    print(f"\n{'index':<34} {'table':<14} {'MB':>8} {'B/row':>6}")
    for table, index, size in found["indexes"]:
        rows = tables[table]["rows"]
        per_row = f"{size / rows:6.1f}" if rows else ""
        print(f"{index:<34} {table:<14} {mb(size):>8} {per_row:>6}")
    s = tables["scores"]
    everything = sum(t["total"] for t in tables.values())
    figures = {
        "score_heap_bytes": s["heap"] / scores,
        "score_index_bytes": s["indexes"] / scores,
        "score_total_bytes": s["total"] / scores,
        "all_tables_bytes": everything / scores,
        "images_total_bytes": tables["images"]["total"] / scores,
        "hot_index_bytes": sum(size for _, index, size in found["indexes"] if index in HOT_INDEXES)
        / scores,
    }
    print(
        f"\nper score row (scores table): heap {figures['score_heap_bytes']:.0f} B, indexes "
        f"{figures['score_index_bytes']:.0f} B, total {figures['score_total_bytes']:.0f} B; "
        f"per scored image, every table: {figures['all_tables_bytes']:.0f} B "
        f"(images table {figures['images_total_bytes']:.0f} B)"
    )
    c = found["columns"]
    print(
        f"a score row's tuple averages {c['row']:.0f} B: probabilities {c['probabilities']:.0f} B, "
        f"rule {c['rule']:.0f} B, quality {c['quality']:.0f} B (JSON, stored as text)"
    )
    return figures


def report_extrapolation(figures: dict[str, float], ram: int, server_ram: int) -> dict[str, float]:
    """Linear sizes at 10M and 100M scores, and where they outgrow memory."""
    print(f"\n{'scores':>12} {'scores GB':>10} {'images GB':>10} {'hot idx GB':>11} {'all GB':>8}")
    out = {}
    for rows in (1_000_000, *TARGETS):
        row = {
            key: figures[key] * rows / GIB
            for key in ("score_total_bytes", "images_total_bytes", "hot_index_bytes")
        }
        total = figures["all_tables_bytes"] * rows / GIB
        print(
            f"{rows:>12,} {row['score_total_bytes']:>10.2f} {row['images_total_bytes']:>10.2f} "
            f"{row['hot_index_bytes']:>11.2f} {total:>8.1f}"
        )
        out[f"db_gb_at_{rows // 1_000_000}m"] = round(total, 2)
    for label, memory in (("this machine", ram), (f"a {server_ram // GIB} GiB server", server_ram)):
        whole = memory / figures["all_tables_bytes"]
        hot = memory / figures["hot_index_bytes"]
        print(
            f"{label} ({memory / GIB:.0f} GiB RAM): every table fits up to ~{whole / 1e6:,.0f}M "
            f"scores; the hot indexes alone up to ~{hot / 1e6:,.0f}M"
        )
    return out


def report_queries(timed: dict[str, dict[str, float]], runs: int) -> None:
    print(f"\n{'query':<10} {'p50 ms':>8} {'min ms':>8} {'max ms':>8} {'rows':>6} {'stmts':>6}")
    for name, t in timed.items():
        print(
            f"{name:<10} {t['p50']:>8.2f} {t['min']:>8.2f} {t['max']:>8.2f} {t['rows']:>6.0f} "
            f"{t['statements']:>6.0f}"
        )
    print(f"({runs} runs each after 2 warm-up runs; one session per run, as one request)")


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Schema, fill, vacuum, sizes, timings and plans; the key=value figures."""
    from marco_svc.db import migrate
    from marco_svc.db.session import Database

    shape = Shape(args.wells, args.drops, args.images_per_day, args.scores, args.backlog)
    db = Database(url)
    try:
        migrate.upgrade(db.engine)
        model_id = add_model(db.engine)
        print(
            f"filling: {shape.images:,} images ({shape.scores:,} scored, {shape.backlog:,} new), "
            f"{shape.inspections:,} inspections of {shape.wells}x{shape.drops} plates, "
            f"{shape.images_per_day:,} images a day",
            flush=True,
        )
        start = time.perf_counter()
        fill(db.engine, shape, model_id)
        vacuum = vacuum_analyze(db.engine)
        load = time.perf_counter() - start
        print(f"  {'VACUUM ANALYZE':<28} {'':>10}      {vacuum:7.1f} s\nloaded in {load:.0f} s")
        found = sizes(db.engine)
        figures = report_sizes(found, args.scores)
        pairs = report_extrapolation(figures, ram_bytes(), args.ram_gib * GIB)
        settings = server_settings(db.engine)
        print("\n" + ", ".join(f"{key}={value}" for key, value in settings.items()))
        clock = SqlClock(db.engine)
        queries = hot_queries(db, model_id)
        timed = {q.name: time_query(db, clock, q, args.runs) for q in queries}
        report_queries(timed, args.runs)
        for query in queries:
            explain(db, clock, query)
    finally:
        db.dispose()
    pairs.update(
        scores=args.scores,
        load_s=round(load, 1),
        scores_mb=round(found["tables"]["scores"]["total"] / MIB, 1),
        images_mb=round(found["tables"]["images"]["total"] / MIB, 1),
        database_mb=round(found["database"] / MIB, 1),
        bytes_per_score=round(figures["score_total_bytes"]),
        bytes_per_scored_image_all_tables=round(figures["all_tables_bytes"]),
        hot_index_bytes_per_score=round(figures["hot_index_bytes"]),
    )
    for name, t in timed.items():
        pairs[f"{name}_p50_ms"] = round(t["p50"], 2)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_SERVER, help=f"server URL ({DEFAULT_SERVER})")
    parser.add_argument("--scores", type=int, default=1_000_000, help="score rows (1000000)")
    parser.add_argument("--wells", type=int, default=96, choices=sorted(COLUMNS), help="(96)")
    parser.add_argument("--drops", type=int, default=3, choices=(1, 2, 3, 4), help="(3)")
    parser.add_argument("--images-per-day", type=int, default=20_000, help="pace (20000)")
    parser.add_argument("--backlog", type=int, default=2000, help="new images (2000)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per query (15)")
    parser.add_argument("--ram-gib", type=int, default=64, help="a DB server's RAM (64)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    url, drop = scratch_postgres(args.postgres)
    print(f"scratch database {url}", flush=True)
    try:
        pairs = measure(url, args)
    finally:
        if not args.keep:
            drop()
    print(" ".join(f"{key}={value}" for key, value in pairs.items()))


if __name__ == "__main__":
    main()
