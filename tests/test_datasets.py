"""Data readers and group-aware splits; bad data sets stop with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from marco_svc.labels import MARCO4_LABELS, MERCK10_LABELS
from marco_svc.train.datasets import DatasetError, read_dataset
from marco_svc.train.splits import split
from tests.helpers import jpeg_bytes, write_jpeg


def make_folders(root: Path, names: list[str], per_class: int = 2) -> Path:
    for c, name in enumerate(names):
        for i in range(per_class):
            write_jpeg(root / name / f"{i}.jpg", seed=c * 100 + i, width=16, height=12)
    return root


def test_folder_per_class_with_spelling_variants(tmp_path: Path) -> None:
    names = ["clear", "CRYSTALS", "other", "Precipitate"]
    data = read_dataset(str(make_folders(tmp_path, names)))
    assert data.scheme == "marco4"
    assert data.counts() == dict.fromkeys(MARCO4_LABELS, 2)
    ten = [label.replace(" & ", "_and_").replace(" ", "_") for label in MERCK10_LABELS]
    data10 = read_dataset(str(make_folders(tmp_path / "ten", ten, per_class=1)))
    assert data10.scheme == "merck10" and "needles & plates" in {e.label for e in data10.examples}


def test_manifest_with_groups_and_relative_paths(tmp_path: Path) -> None:
    rows = ["# made by a test", "path,label,group"]
    for i, label in enumerate(MARCO4_LABELS * 2):
        write_jpeg(tmp_path / "img" / f"{i}.jpg", seed=i, width=16, height=12)
        rows.append(f"img/{i}.jpg,{label},plate{i % 3}")
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    data = read_dataset(str(tmp_path / "set.csv"))
    assert len(data.examples) == 8 and {e.group for e in data.examples} == {
        "plate0",
        "plate1",
        "plate2",
    }
    assert Path(data.examples[0].source) == tmp_path / "img" / "0.jpg"


def write_shard(path: Path, rows: list[tuple[str, int]]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (text, number) in enumerate(rows):
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[jpeg_bytes(8, 8, seed=i)])
                ),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[number])
                ),
            }
            if text:
                feature["image/class/text"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[text.encode()])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_tfrecord_shards_by_text_or_index(tmp_path: Path) -> None:
    write_shard(tmp_path / "train-00000-of-00002", [("Clear", 1), ("Crystals", 2)])
    write_shard(tmp_path / "train-00001-of-00002", [("", 3), ("", 4)])  # 1-based indices
    data = read_dataset(str(tmp_path / "train-*"))
    assert [e.label for e in data.examples] == list(MARCO4_LABELS)
    assert data.examples[3].source.endswith("train-00001-of-00002#1")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: root, "has no labelled images"),
        (lambda root: make_folders(root, ["clear", "crystals", "other", "sludge"]), "'sludge'"),
        (
            lambda root: make_folders(root, ["clear", "crystals", "other", "bad drop"]),
            "mixes label",
        ),
    ],
)
def test_bad_folders_stop_with_a_message(tmp_path: Path, build, message: str) -> None:
    root = build(tmp_path / "data")
    root.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DatasetError, match=message):
        read_dataset(str(root))


def test_bad_manifests_stop_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read manifest"):
        read_dataset(str(tmp_path / "absent.csv"))
    (tmp_path / "cols.csv").write_text("file,class\nx.jpg,Clear\n")
    with pytest.raises(DatasetError, match="columns path,label"):
        read_dataset(str(tmp_path / "cols.csv"))
    rows = "path,label\n" + "".join(
        f"missing{i}.jpg,{label}\n" for i, label in enumerate(MARCO4_LABELS)
    )
    (tmp_path / "gone.csv").write_text(rows)
    with pytest.raises(DatasetError, match="unreadable images"):
        read_dataset(str(tmp_path / "gone.csv"))
    with pytest.raises(DatasetError, match=r"not a folder, \.csv manifest"):
        read_dataset(str(tmp_path / "nothing-here"))


def test_group_aware_split_is_deterministic(tmp_path: Path) -> None:
    rows = ["path,label,group"]
    for i in range(400):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x")
        rows.append(f"{path},{MARCO4_LABELS[i % 4]},plate{i // 8}")
    (tmp_path / "m.csv").write_text("\n".join(rows))
    data = read_dataset(str(tmp_path / "m.csv"))
    train, val, test = split(data, (0.7, 0.15, 0.15), seed=5)
    groups = [{e.group for e in part.examples} for part in (train, val, test)]
    assert (
        not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    )
    assert sum(len(p.examples) for p in (train, val, test)) == 400
    assert 0.5 < len(train.examples) / 400 < 0.9
    again = split(data, (0.7, 0.15, 0.15), seed=5)
    assert [e.source for e in again[2].examples] == [e.source for e in test.examples]
    with pytest.raises(DatasetError, match="sum to 1"):
        split(data, (0.5, 0.2))


def test_a_set_may_lack_classes_and_says_which(tmp_path: Path) -> None:
    data = read_dataset(str(make_folders(tmp_path / "data", ["clear", "crystals", "other"])))
    assert data.absent() == ["Precipitate"]
    assert data.counts()["Precipitate"] == 0
