"""The real plate 90j8 stored through the flat-export adapter and through the native Rock
Maker store rebuilt from it: both give the same plate, inspection, wells and drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REAL_PLATE, needs_real_plate
from tests.helpers import cli_json
from tests.rockmaker_tree import METADATA_CSV, rebuild_native_tree

pytestmark = needs_real_plate
WELLS_96 = sorted(f"{row}{col}" for row in "ABCDEFGH" for col in range(1, 13))


def source(kind: str, tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    if kind == "flat":
        return REAL_PLATE, env
    store = tmp_path / "RockMakerStorage"
    rebuild_native_tree(store, with_csv=kind == "tree+sidecar csv")
    if kind == "tree+configured csv":
        env = {**env, "MARCO_ROCKMAKER_METADATA": str(METADATA_CSV)}
    return store, env


@pytest.mark.parametrize("kind", ["flat", "tree+sidecar csv", "tree+configured csv"])
def test_the_real_plate_through_each_adapter(
    kind: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder, env = source(kind, tmp_path, cli_env)
    stored = cli_json("ingest", str(folder), env=env)
    assert stored["counts"] == {"created": 96}
    detail = cli_json("plates", "show", "90j8", env=env)
    assert (detail["barcode"], detail["plate_type"]) == ("90j8", "96x2")
    assert sorted(i["well"] for i in detail["images"]) == WELLS_96
    assert {i["drop"] for i in detail["images"]} == {1}
    [inspection] = detail["inspections"]
    assert (inspection["imager"], inspection["imaged_at"]) == ("RI1000-0081", "2018-04-11T00:00:00")
    assert inspection["external_id"] == (None if kind == "flat" else "616")
    assert {i["status"] for i in detail["images"]} == {"new"}


def test_flat_export_and_native_tree_land_on_the_same_drops(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    assert cli_json("ingest", str(REAL_PLATE), env=cli_env)["counts"] == {"created": 96}
    store = tmp_path / "RockMakerStorage"
    rebuild_native_tree(store)
    again = cli_json("ingest", str(store), env=cli_env)
    assert again["counts"] == {"duplicate": 96}, "same plate, inspection, drop and content"
    detail = cli_json("plates", "show", "90j8", env=cli_env)
    assert len(detail["images"]) == 96
    assert detail["inspections"][0]["external_id"] == "616"  # learned from the tree
