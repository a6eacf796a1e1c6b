"""ISPyB auto-scores: classes mapped by name, SynchWeb's shape, the SQL export, and
`marco-svc export ispyb --call` against a real stored procedure on PostgreSQL."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from imager_adapters.record import ImageRecord
from marco_svc.cli import cli
from marco_svc.db.models import Image, ModelVersion
from marco_svc.ingest import ingest
from marco_svc.ispyb import (
    ISPYB_CLASSES,
    SCHEMA_NAME,
    AutoScoreRow,
    autoscores,
    export_rows,
    ispyb_classes,
    map_path,
    write_sql,
)
from marco_svc.labels import MARCO4, MARCO4_LABELS, MERCK10, MERCK10_LABELS
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, mark_failed, save_scores
from tests.conftest import ScratchPostgres
from tests.helpers import run_cli, write_jpeg

ORDER = ["clear", "crystal", "precipitant", "other"]

# Four distinct values: any mix-up of classes shows. By position, MARCO4_LABELS (Clear,
# Crystals, Other, Precipitate) laid onto ISPyB's order would swap precipitant and other.
FOUR = {"Clear": 0.1, "Crystals": 0.6, "Other": 0.05, "Precipitate": 0.25}
FOUR_AS_ISPYB = {"clear": 0.1, "crystal": 0.6, "precipitant": 0.25, "other": 0.05}

TEN = {
    "bad drop": 0.01,
    "clear": 0.02,
    "heavy precipitate": 0.04,
    "large crystals": 0.08,
    "light precipitate": 0.16,
    "medium crystals": 0.03,
    "micro crystals": 0.05,
    "needles & plates": 0.07,
    "phase separation": 0.09,
    "small crystals": 0.45,
}
TEN_AS_ISPYB = {
    "clear": 0.02,
    "crystal": 0.08 + 0.03 + 0.05 + 0.07 + 0.45,
    "precipitant": 0.04 + 0.16 + 0.09,
    "other": 0.01,
}


def approx(classes: dict[str, float]) -> object:
    return pytest.approx(classes, abs=1e-6)


# -- the mapping, by name ------------------------------------------------------------------


def test_four_way_maps_by_name_in_ispyb_order() -> None:
    assert list(ISPYB_CLASSES.values()) == ORDER
    assert set(ISPYB_CLASSES) == set(MARCO4_LABELS)
    classes = ispyb_classes(FOUR)
    assert list(classes) == ORDER
    assert classes == approx(FOUR_AS_ISPYB)


@pytest.mark.parametrize(
    "order", [list(reversed(MARCO4_LABELS)), ["Other", "Clear", "Precipitate", "Crystals"]]
)
def test_key_order_does_not_matter(order: list[str]) -> None:
    shuffled = {label: FOUR[label] for label in order}
    assert list(shuffled) != list(MARCO4_LABELS)
    assert ispyb_classes(shuffled) == approx(FOUR_AS_ISPYB)


def test_ten_way_sums_into_the_four_classes_by_name() -> None:
    assert ispyb_classes(TEN) == approx(TEN_AS_ISPYB)
    reordered = {label: TEN[label] for label in reversed(MERCK10_LABELS)}
    assert ispyb_classes(reordered) == approx(TEN_AS_ISPYB)
    assert list(ispyb_classes(reordered)) == ORDER


def test_a_two_head_score_exports_its_four_way_head() -> None:
    assert ispyb_classes({**TEN, **FOUR}) == approx(FOUR_AS_ISPYB)


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        ({"Clear": 0.5, "crystal": 0.5}, "unknown label"),
        ({"Clear": 0.5, "Crystals": float("nan")}, "not finite"),
        ({"Clear": "lots"}, "not a number"),
        ({}, "no probabilities"),
    ],
)
def test_unusable_probabilities_are_refused(probabilities: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ispyb_classes(probabilities)


def test_map_path_replaces_whole_folders_only() -> None:
    mapping = ("/mnt/imager/", "/dls/i02-2/data")
    assert map_path("/mnt/imager/P1/a.jpg", mapping) == "/dls/i02-2/data/P1/a.jpg"
    assert map_path("/mnt/imager2/P1/a.jpg", mapping) is None
    assert map_path("/elsewhere/a.jpg", mapping) is None
    assert map_path("/elsewhere/a.jpg", None) == "/elsewhere/a.jpg"


# -- SQL ------------------------------------------------------------------------------------

AWKWARD = "/data/O'Brien\\plates/it's.jpg"


def _unquote_mariadb(literal: str) -> str:
    """Read one MariaDB string literal (default sql_mode) the way the server does."""
    assert literal[0] == literal[-1] == "'"
    body, out, i = literal[1:-1], [], 0
    escapes = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}
    while i < len(body):
        char = body[i]
        if char == "\\":
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        elif char == "'":
            assert body[i + 1] == "'", f"unescaped quote in {literal}"
            out.append("'")
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def test_sql_quotes_backslash_and_quote() -> None:
    out = io.StringIO()
    rows = [
        AutoScoreRow(AWKWARD, SCHEMA_NAME, "crystal", 0.93),
        AutoScoreRow("/data/plain.jpg", SCHEMA_NAME, "clear", 0.0000004),
    ]
    assert write_sql(rows, out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(
        "-- 2 MARCO auto-score(s) for ISPyB (upsert_sample_image_auto_score)"
    )
    calls = [line for line in lines if line.startswith("CALL ")]
    assert calls == [
        "CALL upsert_sample_image_auto_score("
        "'/data/O''Brien\\\\plates/it''s.jpg', 'MARCO', 'crystal', 0.930000);",
        "CALL upsert_sample_image_auto_score('/data/plain.jpg', 'MARCO', 'clear', 0.000000);",
    ]
    literal = calls[0].removeprefix("CALL upsert_sample_image_auto_score(").split(", 'MARCO'")[0]
    assert _unquote_mariadb(literal) == AWKWARD
    assert lines[-1] == "COMMIT;"


@pytest.mark.parametrize("bad", ["\x00", "\n", "\r", "\x1b", "\x7f", "\x85"])
def test_sql_refuses_control_characters(bad: str) -> None:
    out = io.StringIO()
    rows = [
        AutoScoreRow("/data/fine.jpg", SCHEMA_NAME, "clear", 0.5),
        AutoScoreRow(f"/data/a{bad}b.jpg", SCHEMA_NAME, "clear", 0.5),
    ]
    with pytest.raises(ValueError, match="control character"):
        write_sql(rows, out)
    assert out.getvalue() == ""  # nothing written, not even the good row
    with pytest.raises(ValueError, match="control character"):
        write_sql([AutoScoreRow("/data/x.jpg", SCHEMA_NAME, f"cl{bad}ear", 0.5)], out)


@pytest.mark.parametrize("p", [float("nan"), float("inf"), -0.5, 1.5])
def test_sql_refuses_impossible_probabilities(p: float) -> None:
    with pytest.raises(ValueError, match="probability"):
        write_sql([AutoScoreRow("/data/x.jpg", SCHEMA_NAME, "clear", p)], io.StringIO())


# -- the database: autoscores and export rows ----------------------------------------------


@dataclass
class Seeded:
    paths: dict[str, str]
    ids: dict[str, int]
    inspection_id: int
    m4: ModelVersion
    m10: ModelVersion


def _model(
    runtime: Runtime, name: str, scheme: str, labels: tuple[str, ...], active: bool
) -> ModelVersion:
    with runtime.db.session() as session:
        model = ModelVersion(
            name=name,
            version="1",
            architecture="test",
            scheme=scheme,
            labels=list(labels),
            card={},
            active=active,
        )
        session.add(model)
    return model


def seed(runtime: Runtime, root: Path) -> Seeded:
    """Plate P1: a (awkward path), b, unscored, broken (scored, then failed); plate P2: c.
    m4 (active, four-way) scores a, b, broken, c; m10 (ten-way) scores a and b."""
    files = {
        "a": ("P1", "A1", root / "store" / "it's" / "back\\slash.jpg"),
        "b": ("P1", "A2", root / "store" / "b.jpg"),
        "unscored": ("P1", "A3", root / "store" / "u.jpg"),
        "broken": ("P1", "A4", root / "store" / "broken.jpg"),
        "c": ("P2", "A1", root / "store" / "c.jpg"),
    }
    ids, paths = {}, {}
    for seed_no, (name, (barcode, well, path)) in enumerate(files.items()):
        record = ImageRecord(
            path=write_jpeg(path, seed=seed_no),
            barcode=barcode,
            well=well,
            drop=1,
            inspected_at=datetime(2024, 3, 1, 9, 0),
        )
        result = ingest(runtime.db, record)
        assert result.outcome == "created", result
        ids[name] = result.image_id
        paths[name] = str(path.resolve())
    m4 = _model(runtime, "m4", MARCO4, MARCO4_LABELS, active=True)
    m10 = _model(runtime, "m10", MERCK10, MERCK10_LABELS, active=False)
    rules, barcodes = LabRules.parse("threshold:0.5"), {}
    four = [ScoreResult(ids[n], FOUR, "Crystals", {}, 1.0) for n in ("a", "b", "broken", "c")]
    save_scores(runtime.db, m4, four, rules, barcodes)
    ten = [ScoreResult(ids[n], TEN, "small crystals", {}, 1.0) for n in ("a", "b")]
    save_scores(runtime.db, m10, ten, rules, barcodes)
    mark_failed(runtime.db, ids["broken"], "unreadable")
    with runtime.db.session() as session:
        inspection_id = session.get(Image, ids["a"]).inspection_id
    return Seeded(paths, ids, inspection_id, m4, m10)


def test_autoscores_in_synchweb_shape(runtime: Runtime, tmp_path: Path) -> None:
    s = seed(runtime, tmp_path)
    with runtime.db.session() as session:
        latest = autoscores(session, s.inspection_id)
        ten = autoscores(session, s.inspection_id, s.m10.id)
        nothing = autoscores(session, 10_000)
    # a and b only: unscored and failed images are left out; P2's image is another inspection
    assert [entry["BLSAMPLEIMAGEID"] for entry in latest] == [s.ids["a"], s.ids["b"]]
    assert latest[0] == {
        "BLSAMPLEIMAGEID": s.ids["a"],
        "IMAGEFULLPATH": s.paths["a"],
        "CLASSES": approx(FOUR_AS_ISPYB),  # the active model's score
    }
    assert list(latest[0]["CLASSES"]) == ORDER
    assert [entry["CLASSES"] for entry in ten] == [approx(TEN_AS_ISPYB)] * 2
    assert nothing == []
    json.dumps(latest)  # plain JSON, as SynchWeb serves it


def test_export_rows(runtime: Runtime, tmp_path: Path) -> None:
    s = seed(runtime, tmp_path)
    with runtime.db.session() as session:
        every = list(export_rows(session))
        ten = list(export_rows(session, "P1", s.m10.id))
        mapped = list(export_rows(session, "P1", path_map=(str(tmp_path / "store"), "/dls/x")))
        with pytest.raises(ValueError, match="no plate 'P9'"):
            export_rows(session, "P9")

    def expect(name: str, classes: dict[str, float], path: str | None = None) -> list:
        return [
            AutoScoreRow(path or s.paths[name], "MARCO", c, pytest.approx(classes[c], abs=1e-6))
            for c in ORDER
        ]

    assert every == expect("a", FOUR_AS_ISPYB) + expect("b", FOUR_AS_ISPYB) + expect(
        "c", FOUR_AS_ISPYB
    )
    assert ten == expect("a", TEN_AS_ISPYB) + expect("b", TEN_AS_ISPYB)
    assert [row.image_full_path for row in mapped[::4]] == [
        "/dls/x/it's/back\\slash.jpg",
        "/dls/x/b.jpg",
    ]


# -- the command line ----------------------------------------------------------------------


def invoke(cli_env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["export", "ispyb", *args], env=cli_env)


def test_cli_writes_sql(runtime: Runtime, cli_env: dict[str, str], tmp_path: Path) -> None:
    s = seed(runtime, tmp_path)
    out = tmp_path / "autoscores.sql"
    done = invoke(cli_env, "--plate", "P1", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert done.stderr == f"wrote 8 auto-score row(s) of 2 image(s) to {out}\n"
    calls = [line for line in out.read_text().splitlines() if line.startswith("CALL")]
    assert len(calls) == 8
    quoted = s.paths["a"].replace("\\", "\\\\").replace("'", "''")
    assert (
        calls[1]
        == f"CALL upsert_sample_image_auto_score('{quoted}', 'MARCO', 'crystal', 0.600000);"
    )

    done = invoke(cli_env, "--model", "m10:1")  # standard output, every plate
    assert done.exit_code == 0, done.output
    assert "'crystal', 0.680000);" in done.stdout
    assert done.stderr == "wrote 8 auto-score row(s) of 2 image(s)\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--plate", "P9"], 1, "Error: no plate 'P9'"),
        (["--model", "nope:1"], 1, "Error: no scores of model 'nope:1' in the database"),
        (["--map-path", "/only-old"], 2, "is not OLD=NEW"),
        (["--call"], 2, "no ISPyB database: pass --ispyb-url or set ispyb_database_url"),
        (["--call", "--out", "x.sql"], 2, "pass one of them"),
        (["--ispyb-url", "mysql+pymysql://u@h/ispyb"], 2, "--ispyb-url is used with --call only"),
        (["--call", "--ispyb-url", "nonsense"], 1, "Error: malformed ISPyB database URL"),
        (["--call", "--ispyb-url", "mysql+nodriver://u@h/i"], 1, "Error: cannot open"),
    ],
)
def test_cli_errors(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path, args: list, code: int, message: str
) -> None:
    seed(runtime, tmp_path)
    done = invoke(cli_env, *args)
    assert done.exit_code == code, done.output
    assert message in done.stderr, done.stderr
    if code == 1:
        assert done.stderr.count("\n") == 1, done.stderr


# -- --call against a real procedure (PostgreSQL stands in for ISPyB's MariaDB) --------------

PROCEDURE = """
CREATE OR REPLACE PROCEDURE upsert_sample_image_auto_score(
    p_image_full_path varchar, p_schema_name varchar, p_score_class varchar,
    p_probability double precision)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_score_class = {refuse} THEN
        RAISE EXCEPTION 'refused class %', p_score_class;
    END IF;
    INSERT INTO calls (image_full_path, schema_name, score_class, probability)
    VALUES (p_image_full_path, p_schema_name, p_score_class, p_probability);
END $$
"""


def _fake_ispyb(scratch_postgres: ScratchPostgres) -> str:
    url = scratch_postgres.create()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE calls (id serial PRIMARY KEY, image_full_path varchar(255), "
                "schema_name varchar(25), score_class varchar(15), probability double precision)"
            )
        )
        connection.execute(text(PROCEDURE.format(refuse="''")))
    engine.dispose()
    return url


def _calls(url: str) -> list[tuple]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT image_full_path, schema_name, score_class, probability "
                "FROM calls ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [(path, schema, cls, round(p, 6)) for path, schema, cls, p in rows]


@pytest.mark.postgres
def test_call_runs_the_procedure_on_the_ispyb_database(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path, scratch_postgres: ScratchPostgres
) -> None:
    s = seed(runtime, tmp_path)
    ispyb_url = _fake_ispyb(scratch_postgres)
    mapping = f"{tmp_path / 'store'}=/dls/i02-2/data"
    args = (
        "export",
        "ispyb",
        "--plate",
        "P1",
        "--map-path",
        mapping,
        "--call",
        "--ispyb-url",
        ispyb_url,
    )
    expected = [
        (path, "MARCO", cls, round(FOUR_AS_ISPYB[cls], 6))
        for path in ("/dls/i02-2/data/it's/back\\slash.jpg", "/dls/i02-2/data/b.jpg")
        for cls in ORDER
    ]

    done = run_cli(*args, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "called upsert_sample_image_auto_score for 8 auto-score row(s) of 2 image(s)"
    )
    assert _calls(ispyb_url) == expected

    done = run_cli(*args, env=cli_env)  # again: called again with the same values
    assert done.returncode == 0, done.stderr
    assert _calls(ispyb_url) == expected + expected

    # the URL may come from the setting; a version's scores only
    env = {**cli_env, "MARCO_ISPYB_DATABASE_URL": ispyb_url}
    done = run_cli("export", "ispyb", "--model", "m10", "--call", env=env)
    assert done.returncode == 0, done.stderr
    ten = _calls(ispyb_url)[16:]
    assert ten == [
        (s.paths[name], "MARCO", cls, round(TEN_AS_ISPYB[cls], 6))
        for name in ("a", "b")
        for cls in ORDER
    ]

    # one transaction: a refused call keeps none of the rows before it
    engine = create_engine(ispyb_url)
    with engine.begin() as connection:
        connection.execute(text(PROCEDURE.format(refuse="'other'")))
    engine.dispose()
    before = _calls(ispyb_url)
    done = run_cli("export", "ispyb", "--call", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ISPyB database postgresql+psycopg://"), done.stderr
    assert "refused class other" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert _calls(ispyb_url) == before


def test_call_with_an_unreachable_database_is_one_line(
    runtime: Runtime, cli_env: dict[str, str], tmp_path: Path
) -> None:
    seed(runtime, tmp_path)
    url = "postgresql+psycopg://someone:s3cret@127.0.0.1:1/ispyb"
    done = invoke(cli_env, "--call", "--ispyb-url", url)
    assert done.exit_code == 1
    assert done.stderr.startswith("Error: ISPyB database postgresql+psycopg://someone:***@"), (
        done.stderr
    )
    assert "s3cret" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.postgres
def test_sql_file_reads_back_exactly(scratch_postgres: ScratchPostgres) -> None:
    """The written literals, read by a real server with backslash escapes on (PostgreSQL with
    standard_conforming_strings off reads '' and \\\\ as MariaDB does), give the paths back."""
    ispyb_url = _fake_ispyb(scratch_postgres)
    paths = [AWKWARD, "/data/plain.jpg", "/data/ends-with\\", "/data/ünï'cödé.jpg"]
    out = io.StringIO()
    write_sql([AutoScoreRow(p, SCHEMA_NAME, "crystal", 0.5) for p in paths], out)
    engine = create_engine(ispyb_url)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL standard_conforming_strings = off"))
        connection.execute(text("SET LOCAL escape_string_warning = off"))
        for line in out.getvalue().splitlines():
            if line.startswith("CALL "):
                connection.exec_driver_sql(line.rstrip(";"))
    engine.dispose()
    assert [row[0] for row in _calls(ispyb_url)] == paths
