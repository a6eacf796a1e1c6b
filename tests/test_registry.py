"""The model registry: folders in the data dir, ModelVersion rows, activation, resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from marco_svc import registry
from marco_svc.config import Settings, load_settings
from marco_svc.db.models import ModelVersion
from marco_svc.nets.card import ModelCard, sha256_of
from marco_svc.registry import ModelStoreError
from marco_svc.runtime import Runtime
from tests.nets_helpers import write_fake_model_folder


@pytest.fixture
def files_only(tmp_path: Path) -> Settings:
    """Settings whose database file does not exist (the registry works without it)."""
    return load_settings(env={}, data_dir=tmp_path / "data")


def test_register_copies_the_folder_and_fills_checksums(files_only: Settings, tmp_path: Path):
    source = write_fake_model_folder(tmp_path / "src", "m", "1")
    card = ModelCard.load(source)
    card.artifacts["keras"].sha256 = ""  # the registry fills it in
    card.save(source)
    stored = registry.register(files_only, source)
    assert stored.folder == files_only.resolved_data_dir / "models" / "m" / "1"
    assert stored.card.artifacts["keras"].sha256 == sha256_of(source / "model.keras")
    assert stored.card.artifacts["keras"].bytes == (source / "model.keras").stat().st_size
    assert json.loads((stored.folder / "card.json").read_text())["scheme"] == "merck10"
    stored.card.verify(stored.folder)
    assert [m.ref for m in registry.registered(files_only)] == ["m:1"]
    assert not list(stored.folder.parent.parent.glob(".register-*"))


def test_register_again_is_a_no_op_but_other_artifacts_are_refused(
    files_only: Settings, tmp_path: Path
) -> None:
    source = write_fake_model_folder(tmp_path / "src", "m", "1")
    first = registry.register(files_only, source)
    assert registry.register(files_only, source).card.to_dict() == first.card.to_dict()
    other = write_fake_model_folder(tmp_path / "other", "m", "1", content="different")
    with pytest.raises(ModelStoreError, match="already registered with other artifacts"):
        registry.register(files_only, other)
    renamed = registry.register(files_only, other, version="2")
    assert renamed.ref == "m:2"


@pytest.mark.parametrize("ref", ["", "a:b:c", "../x", "x/y", "m: 1"])
def test_bad_references_are_refused(files_only: Settings, ref: str) -> None:
    with pytest.raises(ModelStoreError, match="bad model reference"):
        registry.find(files_only, ref)


def test_find_by_name_version_or_folder(files_only: Settings, tmp_path: Path) -> None:
    registry.register(files_only, write_fake_model_folder(tmp_path / "a", "m", "1", at="2024"))
    registry.register(files_only, write_fake_model_folder(tmp_path / "b", "m", "2", at="2025"))
    assert registry.find(files_only, "m").ref == "m:2"  # the newest
    assert registry.find(files_only, "m:1").ref == "m:1"
    by_path = registry.find(files_only, str(tmp_path / "a"))
    assert (by_path.ref, by_path.where) == ("m:1", "path")
    with pytest.raises(ModelStoreError, match="no model 'm:3'"):
        registry.find(files_only, "m:3")


def test_resolve_order_without_a_database(files_only: Settings, tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    with pytest.raises(ModelStoreError, match="no model: pass --model or register/import one"):
        registry.resolve(files_only, "", shipped_dir=shipped)
    write_fake_model_folder(shipped / "default" / "1", "default", "1")
    assert registry.resolve(files_only, "", shipped_dir=shipped).where == "shipped"
    write_fake_model_folder(shipped / "other" / "1", "other", "1")
    with pytest.raises(ModelStoreError, match="2 models ship"):
        registry.resolve(files_only, "", shipped_dir=shipped)
    (shipped / "DEFAULT").write_text("other\n")
    assert registry.resolve(files_only, "", shipped_dir=shipped).ref == "other:1"

    registry.register(files_only, write_fake_model_folder(tmp_path / "r", "reg", "7"))
    assert registry.resolve(files_only, "reg", shipped_dir=shipped).ref == "reg:7"
    configured = load_settings(env={}, data_dir=files_only.data_dir, model="reg:7")
    assert registry.resolve(configured, "", shipped_dir=shipped).ref == "reg:7"
    assert registry.resolve(configured, "other", shipped_dir=shipped).ref == "other:1"
    assert not Path(files_only.resolved_database_url.removeprefix("sqlite:///")).exists()


def test_the_repository_models_folder_is_searched_from_a_checkout() -> None:
    assert Path(__file__).resolve().parents[1] / "models" == registry.SHIPPED_DIR
    assert registry.SHIPPED_DIR.is_dir()


def test_register_upserts_the_row_and_activate_makes_exactly_one_active(
    runtime: Runtime, tmp_path: Path
) -> None:
    settings, db = runtime.settings, runtime.db
    first = registry.register(settings, write_fake_model_folder(tmp_path / "a", "m", "1"), db=db)
    registry.register(settings, write_fake_model_folder(tmp_path / "b", "n", "1"), db=db)
    with db.session() as session:
        row = session.execute(select(ModelVersion).where(ModelVersion.name == "m")).scalar_one()
        assert (row.architecture, row.scheme, row.active) == ("resnet-32", "merck10", False)
        assert row.labels == first.card.labels
        assert row.artifact_sha256 == first.card.artifacts["keras"].sha256
        assert row.artifact_uri == (first.folder / "model.keras").resolve().as_uri()
        assert row.card["input_size"] == [128, 128]

    assert registry.activate(db, "m") == ("m", "1")
    assert registry.activate(db, "n:1") == ("n", "1")
    with db.session() as session:
        active = session.execute(select(ModelVersion.name).where(ModelVersion.active)).all()
    assert active == [("n",)]
    assert registry.active_version(db) == ("n", "1")
    assert registry.resolve(settings, "", db=db).ref == "n:1"
    assert registry.resolve(settings, "").ref == "n:1"  # the configured database, read only
    registry.upsert_version(db, registry.find(settings, "n:1"))  # keeps it active
    assert registry.active_version(db) == ("n", "1")
    with pytest.raises(ModelStoreError, match="no model version 'x' in the database"):
        registry.activate(db, "x")


def test_one_answer_to_which_version_scores_now(runtime: Runtime, tmp_path: Path) -> None:
    settings, db = runtime.settings, runtime.db
    shipped = registry.default_shipped()
    assert shipped is not None
    now = registry.scoring_version_id(settings, db)  # nothing registered: the shipped default
    with db.session() as session:
        row = session.get(ModelVersion, now)
        assert (row.name, row.version, row.active) == (
            shipped.card.name,
            shipped.card.version,
            False,
        )
    registry.register(settings, write_fake_model_folder(tmp_path / "a", "m", "1"), db=db)
    assert registry.scoring_version_id(settings, db) == now, "registering is not activating"
    registry.activate(db, "m:1")
    activated = registry.scoring_version_id(settings, db)
    assert activated != now
    pinned = load_settings(
        env={}, data_dir=settings.data_dir, database_url=settings.database_url, model=shipped.ref
    )
    assert registry.scoring_version_id(pinned, db) == now, "the model setting wins"
    assert registry.active_version(db) == ("m", "1"), "asking changes nothing"
