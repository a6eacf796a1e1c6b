"""The deployment files stay in step with the code."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path, PureWindowsPath
from typing import Any
from xml.etree import ElementTree

import click
import pytest
import yaml
from gunicorn.config import Config
from sqlalchemy import create_engine, inspect

from marco_svc.api import sessions
from marco_svc.cli import cli
from marco_svc.config import Settings, load_settings
from marco_svc.http_server import max_request_body_size
from marco_svc.scoring.lab_rules import LabRules
from tests.conftest import ScratchPostgres
from tests.helpers import ROOT, run_cli, wait_for
from tests.test_watch_cli import free_port
from tests.test_wheel import _backend_here, _clean_env

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_example_configuration_loads() -> None:
    settings = load_settings(DEPLOY / "marco-svc.toml.example", env={})
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert len(settings.watch_roots) == 2 and settings.api_tokens == ["change-me"]
    rules = LabRules.parse(settings.crystal_rule, settings.lab_rules)
    assert str(rules.for_barcode("HWI-0001")) == "top_k:3"


def test_systemd_unit_runs_real_commands() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "marco-svc.service")
    service = unit["Service"]
    for key in ("ExecStartPre", "ExecStart"):
        words = service[key].split()
        assert words[0].endswith("/marco-svc")
        group = cli
        for word in words[1:]:
            group = group.commands[word] if hasattr(group, "commands") else group
        assert group.name == words[-1]
    assert service["KillSignal"] == "SIGTERM"


def _options(words: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command line (every edge option takes a value)."""
    options = dict(zip(words[::2], words[1::2], strict=True))
    for name, value in options.items():
        assert name.startswith("--") and not value.startswith("--"), (name, value)
    return options


def test_edge_services_run_marco_svc_edge_with_the_token_from_the_environment() -> None:
    """The systemd unit and the WinSW service name the same `marco-svc edge` command line."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "edge" / "marco-svc-edge.service")
    service = unit["Service"]
    words = shlex.split(service["ExecStart"])
    assert words[0].startswith("/") and words[0].endswith("/bin/marco-svc")
    assert words[1] == "edge"
    linux = _options(words[2:])
    assert {"--watch", "--server"} <= set(linux) <= {"--watch", "--server", "--model", "--state"}
    assert linux["--state"] == f"/var/lib/{service['StateDirectory']}"
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/")  # MARCO_EDGE_TOKEN=...
    assert service["User"] not in {"", "root"} and service["Restart"] == "always"
    assert service["ProtectSystem"] == "strict"  # the watched folder is read only

    config = ElementTree.parse(DEPLOY / "edge" / "windows" / "marco-svc-edge.xml").getroot()
    assert config.tag == "service" and config.findtext("id") == "marco-svc-edge"
    assert PureWindowsPath(config.findtext("executable", "")).name == "marco-svc.exe"
    words = shlex.split(config.findtext("arguments", ""))
    assert words[0] == "edge"
    assert set(_options(words[1:])) == set(linux)
    env = {e.get("name"): e.get("value") for e in config.iter("env")}
    assert env.get("MARCO_EDGE_TOKEN")
    assert config.find("onfailure").get("action") == "restart"
    assert config.find("log").get("mode") == "roll-by-size"


# --- Scale-out: gunicorn, systemd units, the image, compose, nginx --------------------------

SYSTEMD = DEPLOY / "systemd"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"
WSGI_APP = "marco_svc.wsgi:application"
INSTALLED_GUNICORN_CONF = "/etc/marco-svc/gunicorn.conf.py"  # units and image alike
UNITS = ("marco-svc-web.service", "marco-svc-watch.service", "marco-svc-worker@.service")


def _gunicorn_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """deploy/gunicorn.conf.py as gunicorn reads it, under `env` (no other MARCO_ variable)."""
    for name in [n for n in os.environ if n.startswith("MARCO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MARCO_CONFIG", "")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def _resolve(words: list[str]) -> click.Command:
    """The `marco-svc` command that `words` (after the program) names; its options exist."""
    command: click.Command = cli
    rest = list(words)
    while isinstance(command, click.Group) and rest:
        name = rest.pop(0)
        assert name in command.commands, f"marco-svc has no command {name!r} ({words})"
        command = command.commands[name]
    options = {opt for param in command.params for opt in param.opts}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"`{' '.join(words)}`: no option {word}"
    return command


def _exec_line(line: str) -> click.Command | None:
    """Check a command line of a unit or container: `marco-svc ...` names a real command
    (returned), `gunicorn ...` runs the installed config and the WSGI entry."""
    words = shlex.split(line)
    program = words[0].rsplit("/", 1)[-1]
    if program == "gunicorn":
        assert words[1:] == ["-c", INSTALLED_GUNICORN_CONF, WSGI_APP], words
        assert importlib.util.find_spec(WSGI_APP.split(":")[0]) is not None
        return None
    assert program == "marco-svc", words
    return _resolve(words[1:])


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values (keys like Environment repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert section is not None and sep, f"{path.name}: cannot read {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def _environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The variables a unit's Environment= lines set."""
    words = [word for line in service.get("Environment", []) for word in shlex.split(line)]
    return dict(word.split("=", 1) for word in words)


def _seconds(text: str) -> float:
    """'45', '45s' or '2m' as seconds (systemd and compose durations)."""
    match = re.fullmatch(r"(\d+)(s|m|min)?", text.strip())
    assert match, text
    return int(match[1]) * (60 if match[2] in ("m", "min") else 1)


def test_gunicorn_config_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _gunicorn_conf(monkeypatch, MARCO_HOST="::1", MARCO_PORT="9123", MARCO_THREADS="3")
    assert conf["bind"] == "[::1]:9123" and conf["threads"] == 3
    cores = len(os.sched_getaffinity(0))
    assert conf["workers"] == min(2 * cores + 1, conf["MAX_DEFAULT_WORKERS"])
    assert conf["worker_class"] == "gthread" and conf["preload_app"] is False
    assert conf["accesslog"] == "-" and conf["worker_tmp_dir"] == "/dev/shm"
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    # gunicorn itself accepts every value.
    gunicorn_config = Config()
    for name, value in conf.items():
        if name in gunicorn_config.settings:
            gunicorn_config.set(name, value)
    assert gunicorn_config.address == [("::1", 9123)]
    assert gunicorn_config.worker_class_str == "gthread"
    assert gunicorn_config.forwarded_allow_ips == ["127.0.0.1", "::1"]

    conf = _gunicorn_conf(monkeypatch, MARCO_WEB_WORKERS="7", MARCO_FORWARDED_ALLOW_IPS="*")
    assert conf["workers"] == 7 and conf["forwarded_allow_ips"] == "*"
    assert conf["bind"] == "127.0.0.1:8080"  # the settings' defaults


def _web_env(tmp_path: Path, database_url: str, port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARCO_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "MARCO_CONFIG": "",
        "MARCO_DATA_DIR": str(tmp_path / "data"),
        "MARCO_DATABASE_URL": database_url,
        "MARCO_HOST": "127.0.0.1",
        "MARCO_PORT": str(port),
        "MARCO_WEB_WORKERS": "2",
        "MARCO_THREADS": "2",
    }


def _start_gunicorn(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), WSGI_APP],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )


def _get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except OSError:
        return 0, None


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.postgres
def test_gunicorn_serves_the_api_from_postgres_and_stops_on_sigterm(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graceful = _gunicorn_conf(monkeypatch)["graceful_timeout"]
    port = free_port()
    env = _web_env(tmp_path, postgres_url, port)
    log = tmp_path / "gunicorn.log"
    server = _start_gunicorn(env, log)
    try:
        status, health = wait_for(
            lambda: (answer := _get(port, "/healthz"))[0] == 200 and answer,
            timeout=120,
            what=f"gunicorn /healthz (log: {log.read_text()[-2000:]})",
        )
        assert health["status"] == "ok" and health["database"] == "postgresql"
        assert "scorer" not in health and "watcher" not in health  # it only serves
        workers = wait_for(lambda: len(_children(server.pid)) == 2 and _children(server.pid))

        name = f"gunicorn-test-{uuid.uuid4().hex[:8]}"
        made = run_cli("tokens", "create", "--role", "lims", "--name", name, env=env)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        assert _get(port, "/api/v1/plates")[0] == 401
        for _ in range(6):  # both workers take their share of the connections
            status, body = _get(port, "/api/v1/plates", token)
            assert status == 200 and isinstance(body["plates"], list)
    finally:
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
        stopped_after = time.monotonic() - started
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert stopped_after < graceful, text[-3000:]
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
    assert re.search(r'"GET /api/v1/plates HTTP/1.1" 200 ', text)  # the access log
    assert text.count("Worker exiting") == 2


@pytest.mark.postgres
def test_gunicorn_refuses_a_database_it_would_have_to_migrate(
    scratch_postgres: ScratchPostgres, tmp_path: Path
) -> None:
    """Web workers never migrate (`marco-svc db upgrade` does, once): on an empty database
    they fail to boot, say what to run, and leave the database as it was."""
    url = scratch_postgres.create()
    log = tmp_path / "gunicorn.log"
    server = _start_gunicorn(_web_env(tmp_path, url, free_port()), log)
    try:
        code = server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    text = log.read_text()
    assert code != 0 and "run `marco-svc db upgrade`" in text, text[-3000:]
    engine = create_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_systemd_units_run_real_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    units = {name: _unit(SYSTEMD / name) for name in UNITS}
    web, watch, worker = (units[name]["Service"] for name in UNITS)
    for name, unit in units.items():
        assert {"Unit", "Service", "Install"} <= set(unit), name
        assert unit["Unit"]["PartOf"] == ["marco-svc.target"], name
        assert unit["Install"]["WantedBy"] == ["marco-svc.target"], name
        service = unit["Service"]
        assert service["User"] != ["root"] and service["KillSignal"] == ["SIGTERM"], name
        assert _environment(service)["MARCO_CONFIG"] == "/etc/marco-svc/marco.toml", name
        for line in service.get("ExecStartPre", []) + service["ExecStart"]:
            _exec_line(line)
    # Only `db upgrade`, before the web processes, migrates the schema.
    assert web["ExecStartPre"] == ["/opt/marco-svc/bin/marco-svc db upgrade"]
    assert _exec_line(web["ExecStart"][0]) is None  # gunicorn
    assert web["Type"] == ["notify"]
    for service in (watch, worker):
        assert _environment(service)["MARCO_AUTO_UPGRADE"] == "false"
    # Requests in flight finish before systemd would kill gunicorn.
    graceful = _gunicorn_conf(monkeypatch)["graceful_timeout"]
    assert _seconds(web["TimeoutStopSec"][0]) > graceful
    # The watcher watches the folders the example configuration serves images from.
    folders = shlex.split(watch["ExecStart"][0])[2:]
    assert folders == load_settings(DEPLOY / "marco-svc.toml.example", env={}).watch_roots
    # One worker per instance, named after it.
    command = _exec_line(worker["ExecStart"][0])
    assert command is not None and command.name == "worker"
    assert "--hostname worker%i@%H" in worker["ExecStart"][0]
    target = _unit(SYSTEMD / "marco-svc.target")
    assert target["Install"]["WantedBy"] == ["multi-user.target"]


def _marco_command_lines() -> list[list[str]]:
    """Every `marco-svc ...` command line of the units and of compose (the program dropped)."""
    lines = [
        line
        for name in UNITS
        for key, values in _unit(SYSTEMD / name)["Service"].items()
        if key in ("ExecStartPre", "ExecStart")
        for line in values
    ]
    lines += [shlex.join(s["command"]) for s in _compose()["services"].values() if "command" in s]
    return [words[1:] for words in map(shlex.split, lines) if words[0].endswith("marco-svc")]


def test_the_deployed_command_lines_are_understood_by_the_console_script() -> None:
    """`marco-svc CMD --help` runs for each command the units and compose start, and lists
    each option they give it."""
    commands: dict[tuple[str, ...], set[str]] = {}
    for words in _marco_command_lines():
        path = tuple(w for w in words if not w.startswith("-"))[: 2 if words[0] == "db" else 1]
        commands.setdefault(path, set()).update(w.split("=")[0] for w in words if w[0] == "-")
    assert {("db", "upgrade"), ("watch",), ("worker",)} <= set(commands)
    for path, options in commands.items():
        done = run_cli(*path, "--help")
        assert done.returncode == 0, done.stderr
        assert f"Usage: marco-svc {' '.join(path)}" in done.stdout
        for option in options:
            assert option in done.stdout, (path, option)


def _dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination) of the Dockerfile's COPY lines from the build context."""
    copies = []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            *sources, destination = words[1:]
            copies += [(source, destination) for source in sources]
    return copies


def test_the_image_is_built_from_what_its_context_sends() -> None:
    """Each COPY source exists and gets past deploy/Dockerfile.dockerignore (an allowlist),
    and the gunicorn config lands where the units and compose read it."""
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copies = _dockerfile_copies()
    for source, _ in copies:
        assert (ROOT / source).exists() and source in allowed, source
    assert ("deploy/gunicorn.conf.py", INSTALLED_GUNICORN_CONF) in copies
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {"pyproject.toml", "README.md", "models"} | {
        name.split(".")[0] for name in packages["packages"]
    }
    assert needed <= {source for source, _ in copies}


@pytest.mark.slow
def test_the_image_build_context_builds_the_wheel_with_the_wsgi_entry(tmp_path: Path) -> None:
    """What the Dockerfile copies is enough for `pip install .` (checked as a wheel build)."""
    context = tmp_path / "src"
    for source, _ in _dockerfile_copies():
        if source.startswith("deploy/"):
            continue  # copied into the final stage, not part of the build
        if (ROOT / source).is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / source, context / source, ignore=skip)
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(ROOT / source, context / source)
    isolation = ["--no-build-isolation"] if _backend_here() else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp_path)]
    done = subprocess.run(
        [*command, str(context)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (wheel,) = tmp_path.glob("marco_svc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"marco_svc/wsgi.py", "marco_svc/_shipped/DEFAULT"} <= names
    metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = zipfile.ZipFile(wheel).read(metadata_name).decode()
    assert re.search(r"Requires-Dist: gunicorn>=22; .*extra == \"server\"", requires)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_services_run_real_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "watch", "worker", "nginx"}
    ours = {name: s for name, s in services.items() if s.get("image") == "marco-svc:latest"}
    assert set(ours) == {"migrate", "web", "watch", "worker"}
    build = ours["web"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name, service in ours.items():
        command = service["command"]
        _exec_line(shlex.join(command))
        env = service["environment"]
        assert env["MARCO_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["MARCO_BROKER_URL"].startswith("redis://redis:"), name
        assert env["MARCO_AUTO_UPGRADE"] == "false", name
        assert any(v.startswith("marco-data:") for v in service["volumes"]), name
        if name != "migrate":  # the rest start on a migrated schema
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }, name
    assert ours["migrate"]["command"] == ["marco-svc", "db", "upgrade"]
    assert ours["migrate"]["restart"] == "no"
    assert ours["watch"]["command"][2:] == [ours["watch"]["environment"]["MARCO_WATCH_ROOTS"]]
    assert services["worker"]["deploy"]["replicas"] == 2
    web = services["web"]
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert f"{web['environment']['MARCO_PORT']}" in " ".join(web["healthcheck"]["test"])
    graceful = _gunicorn_conf(monkeypatch)["graceful_timeout"]
    assert _seconds(web["stop_grace_period"]) > graceful
    for name in ("postgres", "redis", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    assert services["nginx"]["depends_on"]["web"] == {"condition": "service_healthy"}


def test_compose_nginx_reaches_the_web_service() -> None:
    """compose rewrites the one nginx file's upstream to the web service: the rewrite hits."""
    services = _compose()["services"]
    script = services["nginx"]["command"][-1]
    pattern, replacement = re.search(r"sed 's/(.+?)/(.+?)/'", script).groups()
    conf = (DEPLOY / "nginx" / "marco-svc.conf").read_text()
    assert conf.count(pattern) == 1
    assert replacement == f"server web:{services['web']['environment']['MARCO_PORT']};"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["nginx"]["volumes"]}
    assert (DEPLOY / mounts["/etc/marco-svc/nginx.conf"]).resolve() == (
        DEPLOY / "nginx" / "marco-svc.conf"
    )
    assert "/etc/marco-svc/nginx.conf" in script


def _nginx(directive: str) -> list[str]:
    conf = (DEPLOY / "nginx" / "marco-svc.conf").read_text()
    return re.findall(rf"^\s*{directive}\s+([^;{{]+);", conf, flags=re.MULTILINE)


def test_nginx_lets_every_upload_the_service_accepts_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (limit,) = _nginx("client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", limit.lower()).groups()
    limit_bytes = int(number) * 1024 ** " kmg".index(unit or " ")
    settings = load_settings(env={})
    # Up to the service's own limit the client gets its 413 problem document, not nginx's.
    assert limit_bytes >= max_request_body_size(settings) > settings.upload_max_bytes
    (upstream,) = _nginx("server")
    assert upstream.split()[0] == f"{settings.host}:{settings.port}"
    assert "X-Forwarded-Proto $scheme" in _nginx("proxy_set_header")
    conf = _gunicorn_conf(monkeypatch)
    assert settings.host in conf["forwarded_allow_ips"].split(",")
    assert any("application/json" in types for types in _nginx("gzip_types"))


def _session_keys_made_at_once(settings: Settings, workers: int) -> list[bytes]:
    """The session key as `workers` threads, released together, each read or made it."""
    start = threading.Barrier(workers)
    keys: list[bytes] = []

    def make_app() -> None:
        start.wait()
        keys.append(sessions.session_key(settings))

    threads = [threading.Thread(target=make_app) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return keys


def test_web_workers_starting_together_agree_on_the_session_key(tmp_path: Path) -> None:
    """gunicorn's workers build the app at once on a fresh data folder: one key stands."""
    for round_ in range(3):
        settings = load_settings(env={}, data_dir=tmp_path / f"data-{round_}")
        keys = _session_keys_made_at_once(settings, 8)
        assert len(keys) == 8 and len(set(keys)) == 1
        assert (settings.resolved_data_dir / sessions.KEY_FILE).read_bytes() == keys[0]
        assert [p.name for p in settings.resolved_data_dir.iterdir()] == [sessions.KEY_FILE]
