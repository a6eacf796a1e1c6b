"""Human scores exported as a training manifest, on SQLite and PostgreSQL, and via the CLI."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from imager_adapters.record import ImageRecord
from marco_svc import feed
from marco_svc.cli import cli
from marco_svc.db.models import HumanScore
from marco_svc.ingest import ingest
from marco_svc.runtime import Runtime
from marco_svc.train.datasets import read_manifest
from marco_svc.train.human_labels import (
    COLUMNS,
    ExportError,
    export_human_labels,
    parse_since,
)
from marco_svc.train.splits import split
from tests.helpers import jpeg_bytes, write_jpeg

WHEN = datetime(2024, 5, 1, 9, 30)
LATER = datetime(2024, 5, 8, 9, 30)
T0 = datetime(2024, 6, 1, 12, 0)
T1, T2, T3 = (T0 + timedelta(hours=h) for h in (1, 2, 3))

# name: (barcode, inspected at, well, drop, [(label, scheme, created_at), ...] in insert order)
IMAGES: dict[str, tuple[str, datetime, str, int, list[tuple[str, str, datetime]]]] = {
    "a": ("P1", WHEN, "A1", 1, [("Crystals", "marco4", T2), ("Precipitate", "marco4", T1)]),
    "a_later": ("P1", LATER, "A1", 1, [("Precipitate", "marco4", T1)]),
    "b": ("P1", WHEN, "A1", 2, [("needles & plates", "merck10", T1)]),
    "c": ("P1", WHEN, "A2", 1, [("Clear", "marco4", T3), ("Other", "marco4", T3)]),
    "d": ("P1", WHEN, "A2", 2, [("clear", "merck10", T1)]),
    "e": ("P1", WHEN, "B1", 1, [("heavy precipitate", "merck10", T1)]),
    "gone": ("P1", WHEN, "B1", 2, [("Clear", "marco4", T1)]),
    "changed": ("P1", WHEN, "B2", 1, [("Other", "marco4", T1)]),
    "unscored": ("P1", WHEN, "B2", 2, []),
    "broken": ("P1", WHEN, "C1", 1, [("Clear", "marco4", T1)]),
    "p2": ("P2", WHEN, "A1", 1, [("Clear", "marco4", T0)]),
}


def seed(runtime: Runtime, folder: Path) -> dict[str, Path]:
    """Ingest the images, add their human scores, then delete one file and overwrite one."""
    paths: dict[str, Path] = {}
    for number, (name, (barcode, at, well, drop, _)) in enumerate(IMAGES.items()):
        path = write_jpeg(folder / barcode / f"{name}.jpg", seed=number)
        if name == "broken":
            path.write_bytes(b"not an image at all")
        record = ImageRecord(
            path=path, barcode=barcode, well=well, drop=drop, inspected_at=at, plate_drops=2
        )
        result = ingest(runtime.db, record)
        assert result.outcome == ("failed" if name == "broken" else "created")
        paths[name] = path.resolve()
        with runtime.db.session() as session:
            for label, scheme, created_at in IMAGES[name][4]:
                session.add(
                    HumanScore(
                        image_id=result.image_id,
                        label=label,
                        scheme=scheme,
                        who="ada",
                        source="web",
                        created_at=created_at,
                        updated_at=created_at,
                        feed_seq=next(feed.claim(session, feed.HUMAN_SCORES)),
                    )
                )
    paths["gone"].unlink()
    paths["changed"].write_bytes(jpeg_bytes(seed=99))
    return paths


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_four_way_export_is_a_valid_training_manifest(runtime: Runtime, tmp_path: Path) -> None:
    paths = seed(runtime, tmp_path / "images")
    out = tmp_path / "out" / "human.csv"
    summary = export_human_labels(runtime.db, out, scheme="marco4")

    assert (summary.written, summary.considered, summary.scheme) == (7, 10, "marco4")
    assert summary.skipped == {"failed_image": 1, "missing_file": 1, "changed_file": 1}
    assert summary.skipped_examples["missing_file"] == [str(paths["gone"])]
    assert summary.counts == {"Clear": 2, "Crystals": 2, "Other": 1, "Precipitate": 2}

    data = read_manifest(out)
    assert data.scheme == "marco4"
    by_path = {Path(e.source): e for e in data.examples}
    assert {name: by_path[paths[name]].label for name in paths if paths[name] in by_path} == {
        "a": "Crystals",  # the latest by time, though inserted first
        "a_later": "Precipitate",
        "b": "Crystals",  # ten-way "needles & plates" as four-way
        "c": "Other",  # same time: the higher id wins
        "d": "Clear",
        "e": "Precipitate",
        "p2": "Clear",
    }
    assert by_path[paths["a"]].group == by_path[paths["a_later"]].group == "P1/A1/1"
    assert by_path[paths["b"]].group == "P1/A1/2"
    assert by_path[paths["p2"]].group == "P2/A1/1"
    groups = [{e.group for e in part.examples} for part in split(data, seed=3)]
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == 6, "a drop in two splits"

    rows = {row["path"]: row for row in csv_rows(out)}
    row_b = rows[str(paths["b"])]
    assert (row_b["original_label"], row_b["original_scheme"]) == ("needles & plates", "merck10")
    assert (row_b["barcode"], row_b["well"], row_b["drop"]) == ("P1", "A1", "2")
    assert (row_b["who"], row_b["source"], row_b["scored_at"]) == ("ada", "web", T1.isoformat())
    assert rows[str(paths["a_later"])]["imaged_at"] == LATER.isoformat()
    assert [p.name for p in out.parent.iterdir()] == ["human.csv"], "no temporary files left"


def test_ten_way_export_skips_four_way_labels(runtime: Runtime, tmp_path: Path) -> None:
    paths = seed(runtime, tmp_path / "images")
    out = tmp_path / "ten.csv"
    summary = export_human_labels(runtime.db, out, scheme="merck10")
    assert (summary.written, summary.scheme) == (3, "merck10")
    assert summary.skipped == {"failed_image": 1, "four_way_only": 6}
    labels = {row["path"]: row["label"] for row in csv_rows(out)}
    assert labels == {
        str(paths["b"]): "needles & plates",
        str(paths["d"]): "clear",
        str(paths["e"]): "heavy precipitate",
    }


def test_filters_by_plate_and_time(runtime: Runtime, tmp_path: Path) -> None:
    paths = seed(runtime, tmp_path / "images")
    out = tmp_path / "p2.csv"
    summary = export_human_labels(runtime.db, out, barcodes=["P2"])
    assert (summary.written, summary.scheme, summary.skipped) == (1, "marco4", {})
    assert [row["path"] for row in csv_rows(out)] == [str(paths["p2"])]

    recent = export_human_labels(runtime.db, out, scheme="marco4", since=T2)
    assert recent.written == 2
    assert {row["path"]: row["label"] for row in csv_rows(out)} == {
        str(paths["a"]): "Crystals",
        str(paths["c"]): "Other",
    }


def test_bad_input_writes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "out" / "keep.csv"
    out.parent.mkdir()
    out.write_text("old\n")
    with pytest.raises(ExportError, match="no human scores in the database"):
        export_human_labels(runtime.db, out)
    seed(runtime, tmp_path / "images")
    with pytest.raises(ExportError, match=r"mix marco4 \(4\) and merck10 \(3\)"):
        export_human_labels(runtime.db, out)
    with pytest.raises(ExportError, match="unknown label scheme 'merck4'"):
        export_human_labels(runtime.db, out, scheme="merck4")
    with pytest.raises(ExportError, match="no plate with barcode NOPE"):
        export_human_labels(runtime.db, out, barcodes=["P1", "NOPE"])
    with pytest.raises(ExportError, match="no human scores match"):
        export_human_labels(runtime.db, out, since=T3 + timedelta(seconds=1))
    with pytest.raises(ExportError, match=r"nothing to export.*1 four-way label has no ten-way"):
        export_human_labels(runtime.db, out, scheme="merck10", barcodes=["P2"])
    assert out.read_text() == "old\n"
    assert [p.name for p in out.parent.iterdir()] == ["keep.csv"], "no temporary files left"


def test_since_is_naive_utc() -> None:
    assert parse_since("2024-06-01T14:00+02:00") == datetime(2024, 6, 1, 12, 0)
    assert parse_since("2024-06-01") == datetime(2024, 6, 1)
    with pytest.raises(ExportError, match="bad time 'yesterday'"):
        parse_since("yesterday")


def invoke(cli_env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["labels", "export", *args], env=cli_env)


def test_cli_export(runtime: Runtime, cli_env: dict[str, str], tmp_path: Path) -> None:
    paths = seed(runtime, tmp_path / "images")
    out = tmp_path / "cli.csv"
    done = invoke(cli_env, str(out), "--scheme", "marco4")
    assert done.exit_code == 0, done.output
    assert done.output == (
        f"wrote 7 marco4 label(s) to {out} (Clear 2, Crystals 2, Other 1, Precipitate 2); "
        "skipped 3: 1 image failed ingest, 1 file no longer exists, "
        "1 file content changed since it was scored\n"
    )
    assert len(read_manifest(out).examples) == 7

    done = invoke(cli_env, str(out), "--plate", "P1", "--plate", "P2", "--since", T2.isoformat())
    assert done.exit_code == 0, done.output
    assert "wrote 2 marco4 label(s)" in done.output

    done = invoke(cli_env, str(out), "--scheme", "merck10", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert (report["written"], report["skipped"]) == (3, {"failed_image": 1, "four_way_only": 6})
    assert report["skipped_examples"]["failed_image"] == [str(paths["broken"])]


def test_cli_bad_input(runtime: Runtime, cli_env: dict[str, str], tmp_path: Path) -> None:
    out = str(tmp_path / "x.csv")
    cases = [
        ((out,), "Error: no human scores in the database"),
        ((out, "--scheme", "ten"), "Error: unknown label scheme 'ten' (known: marco4, merck10)"),
        ((out, "--since", "last tuesday"), "Error: bad time 'last tuesday'"),
    ]
    for args, message in cases:
        done = invoke(cli_env, *args)
        assert done.exit_code == 1, done.output
        assert done.output.startswith(message), done.output
        assert done.output.count("\n") == 1, done.output
    assert not Path(out).exists()
