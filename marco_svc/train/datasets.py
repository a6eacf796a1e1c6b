"""Labelled image sets: folder-per-class, CSV manifest, MARCO-release TFRecord shards.

Every reader returns a `LabelledSet` of `Example(source, label, group)` with canonical
label strings of one scheme (four-way MARCO or ten-way Merck), and checks it before any
training starts: no images, unreadable files, unknown labels, mixed schemes and classes
without examples are `DatasetError`s with a message that names the problem.

- Folder per class: `ROOT/<label>/<image>`; folder names match labels ignoring case,
  `_`/`-` for spaces and `and` for `&` (`needles_and_plates` is `needles & plates`).
- CSV manifest: header `path,label[,group]`; relative paths are relative to the CSV;
  lines starting with `#` are comments. The group (plate, drop, ...) keeps splits honest.
- TFRecord shards (the MARCO data release, written by Inception's build_image_data):
  `image/encoded` JPEG bytes and the class as `image/class/text` (preferred) or
  `image/class/label` (an index into the scheme's labels, 1-based by default as that
  script writes it; `label_offset` changes it). Group: `image/filename` when present.
"""

from __future__ import annotations

import csv
import glob
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imager_adapters.registry import IMAGE_SUFFIXES
from marco_svc.labels import SCHEMES, labels_of

RECORD_SEPARATOR = "#"


class DatasetError(ValueError):
    """A data set that cannot be trained or evaluated on, and why."""


@dataclass(frozen=True)
class Example:
    source: str  # a file path, or "<shard>#<index>" for a TFRecord example
    label: str
    group: str


@dataclass
class LabelledSet:
    origin: str
    scheme: str
    examples: list[Example] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, ...]:
        return labels_of(self.scheme)

    def counts(self) -> dict[str, int]:
        found = Counter(example.label for example in self.examples)
        return {label: found.get(label, 0) for label in self.labels}

    def absent(self) -> list[str]:
        """The scheme's classes with no example here."""
        return [label for label, n in self.counts().items() if n == 0]

    def indices(self) -> list[int]:
        order = {label: i for i, label in enumerate(self.labels)}
        return [order[example.label] for example in self.examples]


def _key(text: str) -> str:
    text = text.strip().lower().replace("_", " ").replace("-", " ")
    return " ".join(text.replace(" and ", " & ").split())


_CANONICAL: dict[str, dict[str, str]] = {}
for _scheme, _labels in SCHEMES.items():
    for _label in _labels:
        _CANONICAL.setdefault(_key(_label), {})[_scheme] = _label
_CANONICAL["crystal"] = {"marco4": "Crystals"}


def label_candidates(text: str) -> dict[str, str]:
    """{scheme: canonical label} for a label spelled any accepted way ('clear' fits both)."""
    return _CANONICAL.get(_key(text), {})


def _pick_scheme(texts: Iterable[str], scheme: str | None) -> str | None:
    """The explicit scheme, else the one the unambiguous labels agree on."""
    if scheme is not None:
        return scheme
    votes: Counter[str] = Counter()
    exact: Counter[str] = Counter()
    for text in texts:
        candidates = label_candidates(text)
        if len(candidates) == 1:
            votes[next(iter(candidates))] += 1
        exact.update(s for s, label in candidates.items() if label == text.strip())
    if len(votes) > 1:
        return None  # mixed; reported by _finish
    return next(iter(votes), None) or next(iter(exact), None)


def _finish(
    origin: str, raw: Iterable[tuple[str, str, str, str]], scheme: str | None
) -> LabelledSet:
    """Validate (source, raw label, group, where) rows into a LabelledSet of one scheme."""
    rows = list(raw)
    chosen = _pick_scheme((text for _, text, _, _ in rows), scheme)
    examples, unknown, schemes = [], [], Counter()
    for source, text, group, where in rows:
        candidates = label_candidates(text)
        if not candidates or (chosen is not None and chosen not in candidates):
            if chosen is None or not candidates:
                unknown.append(f"{text!r} ({where})")
            else:
                schemes[next(iter(candidates))] += 1
            continue
        label_scheme = chosen or next(iter(candidates))
        schemes[label_scheme] += 1
        examples.append(Example(source, candidates[label_scheme], group))
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        known = "; ".join(
            f"{s}: {', '.join(ls)}" for s, ls in SCHEMES.items() if not scheme or s == scheme
        )
        raise DatasetError(f"unknown labels in {origin}: {shown} (known labels: {known})")
    if len(schemes) > 1:
        raise DatasetError(
            f"{origin} mixes label schemes ({', '.join(f'{s}: {n}' for s, n in schemes.items())})"
        )
    if not examples:
        raise DatasetError(f"{origin} has no labelled images")
    # Classes without examples are allowed here (an evaluation says which are absent);
    # training refuses a training split that lacks one.
    return LabelledSet(origin, chosen or next(iter(schemes)), examples)


def _check_files(origin: str, paths: Sequence[str]) -> None:
    problems = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                if not handle.read(1):
                    problems.append(f"{path} is empty")
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
        if len(problems) >= 5:
            break
    if problems:
        raise DatasetError(f"unreadable images in {origin}: {'; '.join(problems)}")


def read_folders(root: Path, scheme: str | None = None) -> LabelledSet:
    """ROOT/<label>/<image> folders."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"cannot read data set {root}: not a folder")
    rows = []
    try:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    rows.append((str(path), folder.name, str(path.parent), f"folder {folder.name}"))
    except OSError as exc:
        raise DatasetError(f"cannot read data set {root}: {exc.strerror or exc}") from None
    labelled = _finish(str(root), rows, scheme)
    _check_files(str(root), [e.source for e in labelled.examples])
    return labelled


def read_manifest(path: Path, scheme: str | None = None) -> LabelledSet:
    """A CSV with columns path,label[,group]."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(lines)
    if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
        raise DatasetError(f"manifest {path} needs a header with columns path,label[,group]")
    rows = []
    for number, row in enumerate(reader, start=2):
        source = Path(row["path"])
        source = source if source.is_absolute() else path.parent / source
        rows.append(
            (str(source), row["label"] or "", row.get("group") or str(source), f"row {number}")
        )
    labelled = _finish(str(path), rows, scheme)
    _check_files(str(path), [e.source for e in labelled.examples])
    return labelled


def read_tfrecords(pattern: str, scheme: str | None = None, label_offset: int = 1) -> LabelledSet:
    """MARCO-release TFRecord shards (a file, or a glob like `train-*`)."""
    import tensorflow as tf

    shards = sorted(glob.glob(pattern))
    if not shards:
        raise DatasetError(f"no TFRecord shards match {pattern}")
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    order = labels_of(scheme or "marco4")

    def summary(record: tf.Tensor) -> tuple[tf.Tensor, ...]:
        parsed = tf.io.parse_single_example(record, features)
        return (
            tf.strings.length(parsed["image/encoded"]),
            parsed["image/class/text"],
            parsed["image/class/label"],
            parsed["image/filename"],
        )

    rows = []
    for shard in shards:
        records = tf.data.TFRecordDataset(shard).map(summary).as_numpy_iterator()
        try:
            for index, (size, text, number, filename) in enumerate(records):
                where = f"{Path(shard).name} record {index}"
                if not size:
                    raise DatasetError(f"{where} has no image/encoded bytes")
                label = text.decode()
                if not label and 0 <= number - label_offset < len(order):
                    label = order[number - label_offset]
                source = f"{shard}{RECORD_SEPARATOR}{index}"
                rows.append((source, label or str(number), filename.decode() or source, where))
        except tf.errors.OpError as exc:
            raise DatasetError(f"cannot read TFRecord shard {shard}: {exc.message}") from None
    return _finish(pattern, rows, scheme)


def read_dataset(spec: str, scheme: str | None = None) -> LabelledSet:
    """A folder, a .csv manifest, or TFRecord shards (a .tfrecord file or a glob)."""
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return read_manifest(path, scheme)
    if path.is_dir():
        return read_folders(path, scheme)
    if (
        any(ch in spec for ch in "*?[")
        or path.suffix.lower() in {".tfrecord", ".tfrecords"}
        or (path.is_file() and path.suffix == "")
    ):
        return read_tfrecords(spec, scheme)
    raise DatasetError(
        f"cannot read data set {spec}: not a folder, .csv manifest or TFRecord shards"
    )
