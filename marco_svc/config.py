"""One settings object: `MARCO_*` environment variables over a TOML file over defaults.

Every setting is declared once, as a field of `Settings` with its help text; the
environment names, the TOML keys and `marco-svc settings` all come from that table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from marco_svc.file_store import prepare_data_dir

ENV_PREFIX = "MARCO_"
CONFIG_ENV = "MARCO_CONFIG"


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _setting(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Settings:
    """Every knob of marco-svc; see `marco-svc settings` for the live values."""

    data_dir: Path = _setting(  # noqa: RUF009 - returns a dataclasses.field
        None,
        "Folder for the SQLite file, the model registry and caches "
        "(default: the per-user data folder).",
    )
    database_url: str = _setting(
        "",
        "SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...); default: SQLite in data_dir.",
    )
    ispyb_database_url: str = _setting(
        "",
        "SQLAlchemy URL of the ISPyB database `marco-svc export ispyb --call` writes "
        "auto-scores to, e.g. mysql+pymysql://USER:PASSWORD@HOST/ispyb (install the driver).",
        secret=True,
    )
    host: str = _setting("127.0.0.1", "Address `marco-svc serve` listens on.")
    port: int = _setting(8080, "Port `marco-svc serve` listens on.")
    threads: int = _setting(8, "Worker threads of the HTTP server.")
    http_connection_limit: int = _setting(
        1000, "Open connections the HTTP server holds; past it, new ones wait unanswered."
    )
    http_channel_timeout: int = _setting(
        30, "Seconds after which the HTTP server closes an idle or stalled connection."
    )
    http_backlog: int = _setting(
        1024, "Connections the operating system queues for the HTTP server to accept."
    )
    heatmap_workers: int = _setting(
        1, "Heatmaps computed at once for HTTP requests (each is seconds of TensorFlow)."
    )
    heatmap_queue: int = _setting(
        16, "Heatmap requests waiting for a worker; past it, requests are refused (503)."
    )
    heatmap_wait_seconds: float = _setting(
        2.0, "How long a request waits for its heatmap before answering 202 (come back later)."
    )
    auto_upgrade: bool = _setting(True, "Upgrade the database schema when the service starts.")
    max_image_pixels: int = _setting(
        60_000_000, "Largest image (width x height) accepted; larger is a recorded failure."
    )
    max_image_bytes: int = _setting(
        64 * 1024**2,
        "Largest image file in bytes; a larger file is a recorded failure, never read.",
    )
    image_roots: list[str] = _setting(  # noqa: RUF009
        [],
        "Folders besides data_dir and watch_roots whose images may be read through links "
        "and served by /api/v1/images/ID/file (e.g. an imager store ingested by hand).",
    )
    data_group: str = _setting(
        "",
        "Group that owns data_dir and what the service writes there (folders 0750 with "
        "setgid, files 0640); default: the user's own group.",
    )
    log_level: str = _setting("INFO", "Logging level (DEBUG, INFO, WARNING, ERROR).")
    model: str = _setting(
        "", "Model that scores (NAME or NAME:VERSION); default: the active model version."
    )
    crystal_rule: str = _setting(
        "threshold:0.5",
        "When a drop is a hit: top_k:K (a crystal class among the K most probable), "
        "threshold:T (P(Crystals) >= T) or threshold:op=NAME (a model-card operating point).",
    )
    lab_rules: str = _setting(
        "",
        "Crystal rules per lab, by plate-barcode prefix: 'PREFIX=RULE; PREFIX=RULE' "
        "(e.g. 'HWI=top_k:3; C3=threshold:op=fpr_0.016'); other plates use crystal_rule.",
    )
    scoring_artifact: str = _setting(
        "",
        "Which artifact of the model scores: keras, tflite-fp32, tflite-fp16 or tflite-int8 "
        "(default: keras when TensorFlow is installed, else the first TFLite one).",
    )
    scoring_enabled: bool = _setting(
        True, "Score new images inside `marco-svc serve` and `marco-svc watch`."
    )
    scoring_batch_size: int = _setting(16, "Images per model call when scoring.")
    scoring_threads: int = _setting(
        0,
        "CPU threads one scoring process uses for the model and the image checks (0: every "
        "core); 1 for each of several workers on one machine.",
    )
    broker_url: str = _setting(
        "",
        "Celery broker (redis://HOST:6379/0 or amqp://USER:PASSWORD@HOST//): scoring and "
        "heatmaps run in `marco-svc worker` processes; empty: inside serve and watch.",
        secret=True,
    )
    broker_queue: str = _setting("marco", "Name of the broker queue the workers consume.")
    broker_visibility_timeout: float = _setting(
        3600.0,
        "Redis broker: seconds before a task a worker took but never finished (it died) is "
        "handed to another worker; must exceed the longest task.",
    )
    dispatch_max_queued: int = _setting(
        64, "Scoring tasks the dispatcher keeps waiting in the broker at most (back-pressure)."
    )
    dispatch_again_seconds: float = _setting(
        600.0,
        "Images still unscored this long after they were sent to the workers are sent again "
        "(a lost task; the tasks are idempotent).",
    )
    heatmaps_for_hits: bool = _setting(
        True, "Compute the SmoothGrad heatmap of every hit ahead of time, when idle."
    )
    smoothgrad_samples: int = _setting(50, "Noisy copies per SmoothGrad heatmap.")
    watch_roots: list[str] = _setting(  # noqa: RUF009
        [], "Folders `marco-svc serve` watches for new images (none: no watcher)."
    )
    watch_polling: bool = _setting(
        False, "Poll the watched folders (network shares) instead of using OS file events."
    )
    watch_settle_seconds: float = _setting(
        2.0,
        "A watched file is read once its writer closed it or its size and mtime "
        "have not changed for this long.",
    )
    watch_max_wait_seconds: float = _setting(
        600.0,
        "Give up on a file still changing, or still without its metadata, after this "
        "long; it is recorded as failed with the reason.",
    )
    watch_rescan_seconds: float = _setting(
        600.0,
        "Walk the watched folders again this often, a safety net for missed events "
        "(0: only at start).",
    )
    watch_stall_seconds: float = _setting(
        120.0,
        "/healthz reports the watcher stuck (503) when its work loop has not come round "
        "for this long.",
    )
    watch_queue_size: int = _setting(
        10_000,
        "Most file events and pending files the watcher holds in memory; past it, "
        "it rescans the folders instead.",
    )
    rockmaker_metadata: list[str] = _setting(  # noqa: RUF009
        [],
        "Rock Maker metadata exports (CSV files, or folders of them) for the native "
        "WellImages store; CSVs in the folder that holds WellImages are read too.",
    )
    imager_patterns: list[str] = _setting(  # noqa: RUF009
        [],
        "Extra imager naming schemes, tried before the built-ins: preset names or JSON "
        "objects (README, Imager naming schemes).",
    )
    api_tokens: list[str] = _setting(  # noqa: RUF009
        [],
        "Bearer tokens that act as role robot (uploads); `marco-svc tokens` makes tokens "
        "of any role, stored hashed.",
        secret=True,
    )
    upload_max_bytes: int = _setting(
        2 * 1024**3, "Largest robot upload request in bytes (413 beyond)."
    )
    upload_max_images: int = _setting(
        1152, "Most images in one robot upload request (413 beyond; 1152 = 384 wells x 3)."
    )

    @property
    def resolved_data_dir(self) -> Path:
        """The data folder, created on first use."""
        path = (
            Path(self.data_dir)
            if self.data_dir
            else Path(platformdirs.user_data_dir("marco-svc", appauthor=False))
        )
        prepare_data_dir(path, self.data_group)
        return path

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'marco.sqlite3'}"

    def describe(self) -> list[dict[str, Any]]:
        """The settings table: name, environment variable, value (as resolved: the data folder
        and database URL in use, not empty defaults) and help."""
        url = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.resolved_database_url)
        resolved = {"data_dir": self.resolved_data_dir, "database_url": url}
        return [
            {
                "name": f.name,
                "env": ENV_PREFIX + f.name.upper(),
                "value": _jsonable(
                    resolved.get(f.name, getattr(self, f.name)), f.metadata.get("secret", False)
                ),
                "help": f.metadata["help"],
            }
            for f in dataclasses.fields(self)
        ]


def _jsonable(value: Any, secret: bool = False) -> Any:
    if secret and value:
        return ["***"] * len(value) if isinstance(value, list) else "***"
    if isinstance(value, Path):
        return str(value)
    return value


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    kind = {"Path": Path, "str": str, "int": int, "bool": bool, "float": float}.get(
        kind if isinstance(kind, str) else getattr(kind, "__name__", ""), kind
    )
    if kind == "list[str]" or str(kind).startswith("list"):
        if isinstance(raw, str) and raw.lstrip().startswith("["):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"setting {name}: not a JSON list ({exc})") from None
        if isinstance(raw, str):
            return [part for part in raw.split(os.pathsep) if part]
        if not isinstance(raw, list):
            raise SettingsError(f"setting {name}: expected a list, got {raw!r}")
        return [item if isinstance(item, str) else json.dumps(item) for item in raw]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"setting {name}: expected true/false, got {raw!r}")
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: cannot read {raw!r} ({exc})") from None


def _config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path(platformdirs.user_config_dir("marco-svc", appauthor=False)) / "marco.toml"
    return default if default.is_file() else None


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings: overrides over `MARCO_*` variables over the TOML file over defaults."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    path = _config_file(config_file, env)
    if path is not None:
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        table = table.get("marco", table)
        for key, raw in table.items():
            if key not in fields:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, fields[key].type, raw)
    for name, f in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, f.type, raw)
    for name, raw in overrides.items():
        if name not in fields:
            raise SettingsError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = raw
    return Settings(**values)
