"""The edge agent without the real service: outbox, forwarder against a stub, model updates,
the agent's scan and threads, `marco-svc edge status`, and the lean-install import check.

The stub speaks the contract of `marco_svc.edge.forwarder` / `model_updates`:
POST /api/v1/edge/results, GET /api/v1/edge/model and /api/v1/edge/model/file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from marco_svc.edge.agent import AgentOptions, EdgeAgent, quality_function
from marco_svc.edge.client import Server
from marco_svc.edge.forwarder import Forwarder
from marco_svc.edge.model_updates import ModelManager, edge_format
from marco_svc.edge.outbox import FileStamp, Outbox
from marco_svc.nets.card import ModelCard
from tests.helpers import ROOT, jpeg_bytes, wait_for, write_jpeg

TOKEN = "edge-secret"
PLATE = "P1_2024-01-02_RI54-0001-2drop"
CONTRACT_FIELDS = {
    "key", "barcode", "well", "drop", "imaged_at", "imager", "imaging_mode", "plate_type",
    "path", "sha256", "size_bytes", "width", "height", "model", "probabilities", "top_class",
    "latency_ms", "quality",
}  # fmt: skip
SERVER_ONLY = (
    "sqlalchemy", "flask", "flask_smorest", "marshmallow", "tensorflow", "keras", "cv2",
    "alembic", "psycopg", "waitress", "prometheus_client",
)  # fmt: skip


# -- a stub of the service ------------------------------------------------------------------


class Stub:
    """A tiny service in a thread. `results`: "ok", an HTTP status, or "lose-answer" (store,
    then close the connection without answering, once). `fail`: keys answered failed.
    `offer` / `model_bytes`: what the model endpoints serve (None: 404)."""

    def __init__(self) -> None:
        self.results: Any = "ok"
        self.fail: dict[str, str] = {}
        self.offer: dict[str, Any] | None = None
        self.model_bytes = b""
        self.stored: Counter[str] = Counter()
        self.posts: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                stub.auth.append(self.headers.get("Authorization"))
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.posts.append(data)
                mode = stub.results
                if isinstance(mode, int):
                    self._answer(mode, json.dumps({"message": f"stub says {mode}"}).encode())
                    return
                answers = []
                for item in data["results"]:
                    key = item["key"]
                    if key in stub.fail:
                        answers.append({"key": key, "outcome": "failed", "image_id": None,
                                        "reason": stub.fail[key]})  # fmt: skip
                        continue
                    outcome = "duplicate" if stub.stored[key] else "stored"
                    stub.stored[key] += outcome == "stored"
                    answers.append({"key": key, "outcome": outcome, "image_id": 7, "reason": None})
                if mode == "lose-answer":
                    stub.results = "ok"
                    self.close_connection = True
                    return  # stored, but the answer never comes
                self._answer(200, json.dumps({"results": answers}).encode())

            def do_GET(self) -> None:
                stub.auth.append(self.headers.get("Authorization"))
                if stub.offer is None:
                    self._answer(404, b'{"message": "no edge model"}')
                elif self.path == "/api/v1/edge/model":
                    self._answer(200, json.dumps(stub.offer).encode())
                elif self.path == "/api/v1/edge/model/file":
                    self._answer(200, stub.model_bytes, "application/octet-stream")
                else:
                    self._answer(404, b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "state" / "outbox.sqlite3") as box:
        yield box


def _item(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "barcode": "P1", "well": "A1", "drop": 1, "path": f"/x/{key}.jpg", **extra}


def _forwarder(outbox: Outbox, url: str, **kw: Any) -> Forwarder:
    return Forwarder(outbox, Server(url, TOKEN, timeout=5), jitter=lambda: 1.0, **kw)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- outbox ---------------------------------------------------------------------------------


def test_outbox_survives_reopening_and_never_loses_a_put(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    stamp = FileStamp("/img/a.jpg", 10, 123)
    with Outbox(path) as box, Outbox(path) as other_process:
        assert box.put("k1", _item("k1"), stamp)
        assert box.put("k2", _item("k2"))
        assert box.put("k3", _item("k3"), failed="corrupt image")
        assert not box.put("k1", _item("k1", well="B2"))  # the key is unique: nothing changes
        # committed and visible to another connection at once (durable before it returns)
        assert other_process.depth() == {"pending": 2, "sent": 0, "failed": 1}
        box.note_attempt(["k2"], "server unreachable")
        box.mark_sent(["k1"])
    with Outbox(path) as box:
        assert box.depth() == {"pending": 1, "sent": 1, "failed": 1}
        (item,) = box.peek(10)
        assert (item.key, item.payload, item.attempts) == ("k2", _item("k2"), 1)
        assert box.get("k1")["payload"]["well"] == "A1"
        assert box.get("k3")["last_error"] == "corrupt image"
        assert box.last_forward() is not None
        assert box.has_file(stamp) and not box.has_file(FileStamp("/img/a.jpg", 10, 124))
    with pytest.raises(FileNotFoundError):
        Outbox(tmp_path / "nowhere" / "outbox.sqlite3", create=False)


# -- forwarder ------------------------------------------------------------------------------


def test_forwarder_sends_and_marks_sent(outbox: Outbox, stub: Stub) -> None:
    for key in ("a", "b", "c"):
        outbox.put(key, _item(key))
    forwarder = _forwarder(outbox, stub.url, batch_size=2)
    report = forwarder.drain()
    assert (report.stored, report.error) == (3, None)
    assert outbox.depth() == {"pending": 0, "sent": 3, "failed": 0}
    assert [len(p["results"]) for p in stub.posts] == [2, 1]
    assert stub.posts[0]["results"][0] == _item("a")
    assert set(stub.auth) == {f"Bearer {TOKEN}"}
    assert forwarder.retry_delay() == 0


@pytest.mark.parametrize("trouble", ["500", "503", "429", "refused-connection"])
def test_server_trouble_keeps_results_pending(outbox: Outbox, stub: Stub, trouble: str) -> None:
    outbox.put("a", _item("a"))
    if trouble == "refused-connection":
        url = _closed_port_url()
    else:
        url, stub.results = stub.url, int(trouble)
    forwarder = _forwarder(outbox, url, backoff_base=1.0, backoff_cap=60.0)
    delays = []
    for attempt in (1, 2, 3):
        report = forwarder.forward_once()
        assert report.error is not None and report.kept == 1
        assert outbox.get("a")["attempts"] == attempt
        delays.append(forwarder.retry_delay())
    assert outbox.depth()["pending"] == 1
    assert delays == [1.0, 2.0, 4.0]  # exponential (jitter pinned at its top here)
    forwarder.failures = 20
    assert forwarder.retry_delay() == 60.0  # capped
    if trouble != "refused-connection":  # the service is back
        stub.results = "ok"
        assert forwarder.forward_once().stored == 1
        assert outbox.depth() == {"pending": 0, "sent": 1, "failed": 0}
        assert forwarder.failures == 0


def test_refused_token_logs_one_clear_line(
    outbox: Outbox, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.put("a", _item("a"))
    stub.results = 401
    forwarder = _forwarder(outbox, stub.url, refused_backoff=600.0)
    with caplog.at_level(logging.INFO, logger="marco_svc.edge"):
        for _ in range(3):
            report = forwarder.forward_once()
            assert report.kind == "refused"
    refused = [r for r in caplog.records if "the server refused the token" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "HTTP 401" in refused[0].getMessage()
    assert outbox.depth()["pending"] == 1 and outbox.get("a")["attempts"] == 3
    assert forwarder.retry_delay() == 600.0  # a long wait, not a hammering
    assert outbox.get_meta("forward_problem")["error"].startswith("the server refused the token")


def test_failed_outcome_fails_that_result_for_good(
    outbox: Outbox, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.put("good", _item("good"))
    outbox.put("bad", _item("bad"))
    stub.fail = {"bad": "well Z9 is not on a 96-well plate"}
    with caplog.at_level(logging.ERROR, logger="marco_svc.edge"):
        report = _forwarder(outbox, stub.url).forward_once()
    assert (report.stored, report.failed, report.error) == (1, 1, None)
    assert outbox.depth() == {"pending": 0, "sent": 1, "failed": 1}
    assert "well Z9 is not on a 96-well plate" in outbox.get("bad")["last_error"]
    assert any("well Z9" in r.getMessage() for r in caplog.records)


def test_a_lost_answer_is_retried_and_counted_once(outbox: Outbox, stub: Stub) -> None:
    outbox.put("a", _item("a"))
    stub.results = "lose-answer"
    forwarder = _forwarder(outbox, stub.url)
    first = forwarder.forward_once()
    assert first.kind == "unreachable" and outbox.depth()["pending"] == 1
    assert stub.stored["a"] == 1  # the server has it; the agent cannot know
    second = forwarder.forward_once()
    assert (second.duplicate, second.stored, second.error) == (1, 0, None)
    assert stub.stored["a"] == 1 and len(stub.posts) == 2
    assert outbox.depth() == {"pending": 0, "sent": 1, "failed": 0}


def test_a_rejected_batch_is_split_and_the_bad_result_failed(outbox: Outbox, stub: Stub) -> None:
    outbox.put("a", _item("a"))
    stub.results = 422
    report = _forwarder(outbox, stub.url).forward_once()
    assert report.failed == 1 and "HTTP 422" in outbox.get("a")["last_error"]


# -- models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small two-head models with TFLite artifacts (TensorFlow writes them; the agent
    only reads them with LiteRT)."""
    from tests.nets_helpers import write_model_folder

    root = tmp_path_factory.mktemp("edge-models")
    found = {}
    for version, seed in (("1", 0), ("2", 1)):
        folder = root / f"v{version}"
        write_model_folder(folder, arch="compact-two-head", version=version, tflite=True, seed=seed)
        found[version] = folder
    return found


def _offer(folder: Path, fmt: str = "tflite-fp32") -> tuple[dict[str, Any], bytes]:
    card = ModelCard.load(folder)
    artifact = card.artifacts[fmt]
    data = (folder / artifact.file).read_bytes()
    offer = {
        "ref": card.ref, "name": card.name, "version": card.version, "format": fmt,
        "sha256": artifact.sha256, "size": len(data), "card": card.to_dict(),
    }  # fmt: skip
    return offer, data


def test_the_agent_prefers_int8_then_fp32_and_never_keras() -> None:
    from marco_svc.nets.architectures import new_card
    from marco_svc.nets.card import Artifact, CardError

    card = new_card("compact-two-head", "tiny", "1")
    for fmt in ("keras", "tflite-fp32", "tflite-int8"):
        card.artifacts[fmt] = Artifact(f"{fmt}.bin", "0" * 64)
    assert edge_format(card) == "tflite-int8"
    del card.artifacts["tflite-int8"]
    assert edge_format(card) == "tflite-fp32"
    del card.artifacts["tflite-fp32"]
    with pytest.raises(CardError, match="no TFLite artifact"):
        edge_format(card)


@pytest.mark.slow
def test_model_update_switches_and_a_corrupt_download_is_refused(
    models: dict[str, Path], stub: Stub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    server = Server(stub.url, TOKEN, timeout=10)
    switched: list[str] = []
    manager = ModelManager(state, server, on_switch=lambda m: switched.append(m.card.ref))
    assert manager.load_start_model() is None and manager.updates
    assert manager.check_once() == "none"  # the stub has no model yet (404)

    stub.offer, stub.model_bytes = _offer(models["2"])
    assert manager.check_once() == "switched"
    current = manager.current
    assert current is not None and current.card.version == "2" and current.fmt == "tflite-fp32"
    assert current.sha256 == stub.offer["sha256"]
    assert current.folder.parent == state / "models"
    assert current.folder.name == f"tiny-2-{stub.offer['sha256'][:12]}"
    assert list(ModelCard.load(current.folder).artifacts) == ["tflite-fp32"]
    assert manager.check_once() == "unchanged"

    offer, data = _offer(models["1"])
    stub.offer, stub.model_bytes = offer, data[:-100] + bytes(100)  # wrong bytes
    with caplog.at_level(logging.WARNING, logger="marco_svc.edge"):
        assert manager.check_once() == "refused"
    assert manager.current is current  # the old model stays
    line = next(r.getMessage() for r in caplog.records if "refused the model" in r.getMessage())
    assert "tiny:1" in line and "sha256" in line and "keeping tiny:2" in line
    assert sorted(p.name for p in (state / "models").iterdir()) == [
        "current.json",
        current.folder.name,
    ]

    offer["card"]["artifacts"]["tflite-fp32"]["sha256"] = "0" * 64  # card and offer disagree
    stub.model_bytes = data
    assert manager.check_once() == "refused" and manager.current is current

    # a restarted agent scores with the fetched model before reaching the server
    again = ModelManager(state, Server(_closed_port_url(), TOKEN))
    assert again.load_start_model().sha256 == current.sha256
    assert switched == ["tiny:2"]


def test_a_calibrated_copy_of_the_same_file_is_switched_to(
    models: dict[str, Path], stub: Stub, tmp_path: Path
) -> None:
    """`models calibrate --version` registers the same artifact under a new version with a
    calibrated card: the agent takes that card, so it scores as the server does."""
    manager = ModelManager(tmp_path / "state", Server(stub.url, TOKEN, timeout=10))
    stub.offer, stub.model_bytes = _offer(models["2"])
    assert manager.check_once() == "switched" and manager.current.card.calibration == {}
    calibrated = {"marco4": {"temperature": 1.7, "unknown_below": 0.5}}
    stub.offer["card"] = {**stub.offer["card"], "version": "2-cal", "calibration": calibrated}
    stub.offer.update(ref="tiny:2-cal", version="2-cal")
    assert manager.check_once() == "switched"
    assert manager.current.card.ref == "tiny:2-cal"
    assert manager.current.card.calibration == calibrated
    assert manager.check_once() == "unchanged"


# -- the agent ------------------------------------------------------------------------------


def _write_plate(folder: Path) -> dict[str, Path]:
    plate = folder / PLATE
    files = {
        "A1": write_jpeg(plate / "P1_01A_1.jpg", seed=1, width=160, height=120),
        "B2": write_jpeg(plate / "P1_02B_2.jpg", seed=2, width=160, height=120),
        "corrupt": plate / "P1_03C_1.jpg",
        "unknown": folder / "holiday.jpg",
    }
    files["corrupt"].write_bytes(jpeg_bytes(seed=3)[:200])  # cut short
    files["unknown"].write_bytes(jpeg_bytes(seed=4))
    return files


def _agent(watch: Path, outbox: Outbox, model: Path, url: str | None, **options: Any) -> EdgeAgent:
    server = Server(url, TOKEN, timeout=5) if url else None
    manager = ModelManager(watch.parent / "state", server, pinned=model)
    manager.load_start_model()
    forwarder = _forwarder(outbox, url) if url else None
    options.setdefault("settle", 0)
    return EdgeAgent([watch], outbox, manager, forwarder, options=AgentOptions(**options))


@pytest.mark.slow
def test_scan_once_scores_skips_and_records_failures(
    models: dict[str, Path], outbox: Outbox, tmp_path: Path
) -> None:
    watch = tmp_path / "watch"
    files = _write_plate(watch)
    agent = _agent(watch, outbox, models["1"], None, imager="fallback")
    done = agent.scan_once()
    assert (done["scored"], done["failed"], done["not_taken"]) == (2, 1, 1)
    assert outbox.depth() == {"pending": 2, "sent": 0, "failed": 1}
    items = {item.payload["well"]: item.payload for item in outbox.peek(10)}
    a1 = items["A1"]
    assert set(a1) == CONTRACT_FIELDS
    card = ModelCard.load(models["1"])
    assert a1["model"] == {
        "name": "tiny", "version": "1", "sha256": card.artifacts["tflite-fp32"].sha256
    }  # fmt: skip
    assert (a1["barcode"], a1["drop"], a1["imager"], a1["imaging_mode"]) == (
        "P1", 1, "RI54-0001", "visible"
    )  # fmt: skip
    assert a1["imaged_at"] == "2024-01-02T00:00:00+00:00"
    assert a1["path"] == str(files["A1"].resolve())
    assert a1["sha256"] == hashlib.sha256(files["A1"].read_bytes()).hexdigest()
    assert (a1["width"], a1["height"], a1["size_bytes"]) == (160, 120, files["A1"].stat().st_size)
    assert set(a1["probabilities"]) == set(card.labels)
    assert abs(sum(a1["probabilities"][label] for label in card.heads["marco4"]) - 1) < 1e-3
    assert a1["top_class"] in card.heads["merck10"] and a1["latency_ms"] > 0
    if quality_function() is None:
        assert a1["quality"] == {}
    else:
        assert "flags" in a1["quality"]
    (failed,) = [row for key in _keys(outbox) if (row := outbox.get(key))["state"] == "failed"]
    assert failed["payload"]["well"] == "C3" and "image header" in failed["last_error"]

    assert +agent.scan_once() == Counter()  # nothing new: handled files are not read again
    write_jpeg(files["A1"], seed=9, width=160, height=120)  # rewritten: a new image
    os.utime(files["A1"], ns=(1, 1))  # surely another mtime
    assert agent.scan_once()["scored"] == 1


def _keys(outbox: Outbox) -> list[str]:
    with outbox._lock:
        return [row[0] for row in outbox._db.execute("SELECT key FROM results")]


@pytest.mark.slow
def test_running_agent_scores_new_files_and_forwards(
    models: dict[str, Path], outbox: Outbox, stub: Stub, tmp_path: Path
) -> None:
    watch = tmp_path / "watch"
    old = write_jpeg(watch / PLATE / "P1_01A_1.jpg", seed=1, width=160, height=120)
    # settle: a file is taken when its writer closes it, or after 0.5 s without change
    agent = _agent(watch, outbox, models["1"], stub.url, rescan_interval=0, settle=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run_until, args=(stop,))
    runner.start()
    try:
        wait_for(lambda: len(stub.stored) == 1, 60, "the file there at start to be sent")
        write_jpeg(watch / PLATE / "P1_04D_2.jpg", seed=5, width=160, height=120)
        wait_for(lambda: len(stub.stored) == 2, 60, "the new file to be sent")
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    wells = sorted(item["well"] for post in stub.posts for item in post["results"])
    assert wells == ["A1", "D4"]
    assert outbox.depth() == {"pending": 0, "sent": 2, "failed": 0}
    assert outbox.get_meta("agent_stopped_at") is not None
    assert old.exists()


# -- the command line -------------------------------------------------------------------------


def test_edge_status_json(tmp_path: Path) -> None:
    from marco_svc.cli import cli

    state = tmp_path / "state"
    result = CliRunner().invoke(cli, ["edge", "status", "--state", str(state), "--json"])
    assert result.exit_code == 0, result.output
    empty = json.loads(result.output)
    assert empty["outbox"] == {"pending": 0, "sent": 0, "failed": 0}
    assert empty["model"] is None and "no outbox yet" in empty["note"]

    with Outbox(state / "outbox.sqlite3") as box:
        for key in ("a", "b", "c"):
            box.put(key, _item(key))
        box.put("d", _item("d"), failed="corrupt")
        box.mark_sent(["a"])
        model = {"ref": "tiny:1", "name": "tiny", "version": "1", "sha256": "ab" * 32,
                 "format": "tflite-int8", "folder": "/m", "source": "fetched"}  # fmt: skip
        box.set_meta("model", model)
    for args in (
        ["edge", "status", "--state", str(state), "--json"],
        ["edge", "--state", str(state), "status", "--json"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["outbox"] == {"pending": 2, "sent": 1, "failed": 1}
        assert report["last_forward_at"] and report["model"] == model
        assert report["state_dir"] == str(state)
    words = CliRunner().invoke(cli, ["edge", "status", "--state", str(state)]).output
    assert "2 pending, 1 sent, 1 failed" in words and "tiny:1 (tflite-int8" in words


def test_edge_run_needs_watch_server_and_token(tmp_path: Path) -> None:
    from marco_svc.cli import cli

    env = {"MARCO_EDGE_TOKEN": "", "MARCO_EDGE_SERVER": ""}
    result = CliRunner().invoke(cli, ["edge", "--watch", str(tmp_path)], env=env)
    assert result.exit_code == 2 and "--server URL" in result.output
    result = CliRunner().invoke(
        cli, ["edge", "run", "--watch", str(tmp_path), "--server", "http://x"], env=env
    )
    assert result.exit_code == 2 and "MARCO_EDGE_TOKEN" in result.output


_BLOCKER = f"""
import sys

BLOCKED = {SERVER_ONLY!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


def _lean_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import the server's packages (a sitecustomize
    installs a meta-path blocker), as in an install of the core and the `edge` extra."""
    site = tmp_path / "lean-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(_BLOCKER))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    env.pop("MARCO_DEBUG", None)
    return env


def _lean(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marco_svc", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip


def test_edge_help_without_the_server_packages(tmp_path: Path) -> None:
    env = _lean_env(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import sqlalchemy"], capture_output=True, text=True, env=env
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker is in place
    done = _lean(["edge", "--help"], env)
    assert done.returncode == 0, done.stderr
    assert "Usage: marco-svc edge" in done.stdout and "status" in done.stdout
    listing = _lean(["--help"], env)
    assert listing.returncode == 0 and "Not in this install: needs sqlalchemy" in listing.stdout
    needs_db = _lean(["plates", "list"], env)
    assert needs_db.returncode == 1 and "install marco-svc[server]" in needs_db.stderr


@pytest.mark.slow
def test_edge_agent_runs_without_the_server_packages(
    models: dict[str, Path], stub: Stub, tmp_path: Path
) -> None:
    watch = tmp_path / "watch"
    _write_plate(watch)
    state = tmp_path / "state"
    env = {**_lean_env(tmp_path), "MARCO_EDGE_TOKEN": TOKEN}
    args = ["--watch", str(watch), "--server", stub.url, "--state", str(state), "--settle", "0"]
    done = _lean(["edge", *args, "--model", str(models["1"]), "--once"], env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "OpenCV is not installed" in done.stderr
    assert "scored 2, failed 1, not taken 1; sent 2" in done.stderr
    assert {item["quality"] == {} for post in stub.posts for item in post["results"]} == {True}
    assert set(stub.auth) == {f"Bearer {TOKEN}"}
    assert (state / "edge.log").read_text().count("scored ") >= 2

    # the model the server offers, fetched by the lean agent (no --model)
    stub.offer, stub.model_bytes = _offer(models["2"])
    write_jpeg(watch / PLATE / "P1_05E_1.jpg", seed=6, width=160, height=120)
    done = _lean(["edge", "run", *args, "--once"], env)
    assert done.returncode == 0, done.stderr
    assert "scored 1," in done.stderr
    assert stub.posts[-1]["results"][0]["model"]["version"] == "2"
    status = _lean(["edge", "status", "--state", str(state), "--json"], env)
    report = json.loads(status.stdout)
    assert report["outbox"] == {"pending": 0, "sent": 3, "failed": 1}
    assert report["model"]["ref"] == "tiny:2" and report["model"]["source"] == "fetched"
