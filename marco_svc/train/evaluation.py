"""Evaluate a stored model on a labelled data set: run it over every image, then score each head.

A head is scored against the data set's labels when its scheme matches them; a four-way head
on ten-way labels is scored through `TEN_TO_FOUR`; a ten-way head on four-way labels cannot
be, and is skipped with the reason. Images that cannot be read or decoded are counted and
listed, not fatal, unless none can be read. Probabilities are the served ones: calibrated
as the card says (`nets.calibration`), unless asked for the network's own (`calibrated=False`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc.errors import first_line
from marco_svc.labels import MARCO4, MERCK10, TEN_TO_FOUR, labels_of
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import Runner, choose_format, open_runner
from marco_svc.registry import StoredModel
from marco_svc.scoring.batch import Limits, score_batch
from marco_svc.train.datasets import RECORD_SEPARATOR, DatasetError, Example, LabelledSet
from marco_svc.train.metrics import DEFAULT_FPRS, evaluate

Progress = Callable[[int, int], None]
EVALUATION_KEY = "evaluation"


class EvaluationError(ValueError):
    """A model and data set that cannot be evaluated together, and why."""


@dataclass
class HeadResult:
    """One head's true class indices, probabilities and figures (`metrics.evaluate`)."""

    scheme: str
    y_true: np.ndarray
    probs: np.ndarray
    figures: dict[str, Any]
    mapped_from: str | None = None  # "merck10" when ten-way labels were mapped to four


@dataclass
class EvaluationResult:
    model: str
    fmt: str
    data: str
    data_scheme: str
    examples: int
    heads: dict[str, HeadResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # head -> why it was not scored
    absent: list[str] = field(default_factory=list)  # data-scheme classes with no example
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    rule_head: str = MARCO4  # the head whose P(Crystals) the crystal rules read
    calibrated: bool = False  # the card's temperature scaling was applied to `probs`
    seconds: float = 0.0
    evaluated_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def evaluated(self) -> int:
        return self.examples - len(self.failed)

    def summary(self) -> dict[str, Any]:
        """Everything but the arrays, for JSON."""
        return {
            "model": self.model,
            "format": self.fmt,
            "data": self.data,
            "data_scheme": self.data_scheme,
            "examples": self.examples,
            "evaluated": self.evaluated,
            "failed": [{"source": s, "reason": r} for s, r in self.failed],
            "skipped": dict(self.skipped),
            "absent_classes": list(self.absent),
            "mapped": {h: r.mapped_from for h, r in self.heads.items() if r.mapped_from},
            "evaluated_at": self.evaluated_at,
            "calibrated": self.calibrated,
            "seconds": round(self.seconds, 3),
            "heads": {head: r.figures for head, r in self.heads.items()},
        }


def plan_heads(card: ModelCard, data_scheme: str) -> tuple[list[str], dict[str, str]]:
    """(heads that can be scored on labels of `data_scheme`, {skipped head: reason})."""
    scored, skipped = [], {}
    for scheme in card.heads:
        if scheme == data_scheme or (scheme == MARCO4 and data_scheme == MERCK10):
            scored.append(scheme)
        else:
            skipped[scheme] = (
                f"the {scheme} head cannot be scored on {data_scheme} labels "
                "(ten-way classes are not recoverable from four-way labels)"
            )
    return scored, skipped


def rule_head(card: ModelCard) -> str:
    """The head whose P(Crystals) crystal rules read (see `scoring.rules.p_crystal`)."""
    return MARCO4 if MARCO4 in card.heads else MERCK10


def _split_record(source: str) -> tuple[str, int] | None:
    """(shard, index) for a TFRecord example's source, None for a plain file."""
    shard, sep, index = source.rpartition(RECORD_SEPARATOR)
    if not sep or not index.isdigit() or Path(source).exists():
        return None
    return shard, int(index)


class _RecordReader:
    """Encoded images of TFRecord examples, read forward through each shard."""

    def __init__(self) -> None:
        self.shard: str | None = None
        self.position = 0
        self.records: Iterator[bytes] = iter(())

    def read(self, shard: str, index: int) -> bytes:
        if shard != self.shard or index < self.position:
            import tensorflow as tf

            spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string, default_value="")}
            records = tf.data.TFRecordDataset(shard).map(
                lambda record: tf.io.parse_single_example(record, spec)["image/encoded"]
            )
            self.shard, self.position, self.records = shard, 0, records.as_numpy_iterator()
        for data in self.records:
            self.position += 1
            if self.position - 1 == index:
                return bytes(data)
        raise DatasetError(f"{shard} has no record {index}")


def encoded_or_errors(examples: Sequence[Example]) -> Iterator[bytes | Exception]:
    """Each example's encoded image, or the exception that reading it raised."""
    records = _RecordReader()
    for example in examples:
        try:
            record = _split_record(example.source)
            if record is None:
                yield Path(example.source).read_bytes()
            else:
                yield records.read(*record)
        except Exception as exc:  # reported per image, the others go on
            yield exc


def predict_examples(
    runner: Runner,
    examples: Sequence[Example],
    batch_size: int,
    max_pixels: int | None,
    progress: Progress | None,
    calibrated: bool = True,
) -> tuple[list[int], dict[str, np.ndarray], list[tuple[str, str]]]:
    """(indices of the scored examples, {head: (n, classes) probabilities}, failures), in
    the examples' order; `calibrated` as for `score_batch`."""
    kept: list[int] = []
    rows: dict[str, list[np.ndarray]] = {scheme: [] for scheme in runner.card.heads}
    failed: dict[int, str] = {}
    limits = Limits(max_pixels)
    batch: list[tuple[int, bytes]] = []

    def flush() -> None:
        scored, bad = score_batch(runner, batch, limits, calibrated=calibrated)
        failed.update((f.key, f.reason) for f in bad)
        for item in scored:  # in batch order, and batches come in order
            kept.append(item.key)
            for scheme, values in item.heads.items():
                rows[scheme].append(np.asarray(values, dtype=np.float64))
        batch.clear()

    for index, data in enumerate(encoded_or_errors(examples)):
        if isinstance(data, Exception):
            failed[index] = first_line(data)
        else:
            batch.append((index, data))
        if len(batch) >= batch_size:
            flush()
        if progress is not None:
            progress(index + 1, len(examples))
    flush()
    stacked = {
        scheme: np.stack(parts) if parts else np.zeros((0, len(labels_of(scheme))))
        for scheme, parts in rows.items()
    }
    return kept, stacked, [(examples[i].source, failed[i]) for i in sorted(failed)]


def evaluate_model(
    model: StoredModel,
    data: LabelledSet,
    fmt: str | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
    *,
    max_pixels: int | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    calibrated: bool = True,
) -> EvaluationResult:
    """Run `model` over every image of `data` (in batches) and score each head it can, on
    the served (calibrated) probabilities, or the network's own with `calibrated=False`."""
    if batch_size < 1:
        raise EvaluationError(f"batch size must be at least 1, not {batch_size}")
    card = model.card
    scored, skipped = plan_heads(card, data.scheme)
    if not scored:
        raise EvaluationError(
            f"{card.ref} has no head that can be scored on the {data.scheme} labels of "
            f"{data.origin}: {'; '.join(skipped.values())}"
        )
    if not data.examples:
        raise DatasetError(f"{data.origin} has no labelled images")
    fmt = choose_format(card, fmt)
    if fmt == "keras":
        from marco_svc.nets import quiet_tensorflow

        quiet_tensorflow()
    started = time.monotonic()
    runner = open_runner(card, model.folder, fmt)
    kept, outputs, failed = predict_examples(
        runner, data.examples, batch_size, max_pixels, progress, calibrated
    )
    result = EvaluationResult(
        model=card.ref,
        fmt=fmt,
        data=data.origin,
        data_scheme=data.scheme,
        examples=len(data.examples),
        skipped=skipped,
        absent=data.absent(),
        failed=failed,
        rule_head=rule_head(card),
        calibrated=calibrated and bool(card.calibration),
    )
    if not kept:
        shown = "; ".join(f"{Path(s).name}: {r}" for s, r in failed[:3])
        raise EvaluationError(
            f"none of the {len(failed)} images of {data.origin} could be read ({shown})"
        )
    labels = [data.examples[i].label for i in kept]
    for scheme in scored:
        mapped = scheme != data.scheme
        head_labels = labels_of(scheme)
        names = [TEN_TO_FOUR[label] for label in labels] if mapped else labels
        y_true = np.array([head_labels.index(name) for name in names], dtype=np.int64)
        figures = evaluate(y_true, outputs[scheme], head_labels, fprs)
        result.heads[scheme] = HeadResult(
            scheme, y_true, outputs[scheme], figures, data.scheme if mapped else None
        )
    result.seconds = time.monotonic() - started
    return result


def data_name(spec: str) -> str:
    """A short name for a data set: its folder, a manifest's stem (or folder), a shard prefix."""
    path = Path(spec)
    name = path.resolve().name if path.name in ("", "..") else path.name
    if path.suffix.lower() == ".csv":
        name = path.parent.name if path.stem.lower() == "manifest" else path.stem
    elif any(ch in name for ch in "*?["):
        name = name[: min(name.index(ch) for ch in "*?[" if ch in name)]
    elif path.suffix.lower() in {".tfrecord", ".tfrecords"}:
        name = path.stem
    return name.strip("-_. ") or "data"


def card_figures(result: EvaluationResult) -> dict[str, Any]:
    """The key figures for the model card, and its operating points.

    `operating_points` have the shape the threshold crystal rule reads
    (`threshold:op=fpr_0.016` -> `card.operating_points["fpr_0.016"]["threshold"]`), taken from
    the head whose P(Crystals) the rules use.
    """
    heads = {}
    for scheme, head in result.heads.items():
        figures = head.figures
        crystal = figures["crystal"]
        heads[scheme] = {
            "examples": figures["examples"],
            "labels_mapped_from": head.mapped_from,
            "accuracy": figures["accuracy"],
            "top_k_accuracy": figures["top_k_accuracy"],
            "per_class_accuracy": figures["per_class_accuracy"],
            "crystal_roc_auc": crystal["roc_auc"],
            "crystal_miss_rate": {
                rule: values["miss_rate"] for rule, values in crystal["top_k_rules"].items()
            },
            "operating_points": crystal["operating_points"],
        }
    source = result.heads.get(result.rule_head)
    points = {}
    if source is not None:
        for name, point in source.figures["crystal"]["operating_points"].items():
            points[name] = {
                **point,
                "head": result.rule_head,
                "data": result.data,
                "examples": source.figures["examples"],
                "evaluated_at": result.evaluated_at,
            }
    return {
        "data": result.data,
        "format": result.fmt,
        "evaluated_at": result.evaluated_at,
        "examples": result.examples,
        "failed": len(result.failed),
        "skipped_heads": sorted(result.skipped),
        "heads": heads,
        "operating_points": points,
    }


def apply_to_card(card: ModelCard, name: str, figures: dict[str, Any]) -> None:
    """Put `card_figures` under metrics["evaluation"][name]; replace same-named operating points."""
    card.metrics.setdefault(EVALUATION_KEY, {})[name] = figures
    card.operating_points.update(figures["operating_points"])


def write_result_report(out: Path, result: EvaluationResult) -> dict[str, Path]:
    """The report files of an evaluation (metrics.json also carries `result.summary()`)."""
    import json

    from marco_svc.train.report import write_report

    heads = {h: (r.y_true, r.probs, r.figures) for h, r in result.heads.items()}
    files = write_report(out, result.model, result.data, heads)
    metrics = json.loads(files["json"].read_text(encoding="utf-8"))
    metrics.update({k: v for k, v in result.summary().items() if k not in metrics})
    files["json"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return files
