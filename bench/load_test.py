"""Load test over HTTP (wrk) of the LIMS hits poll and the plate endpoint on PostgreSQL with
100,000 stored scores: gunicorn (`marco_svc.wsgi`) and waitress (`marco-svc serve`) side by
side in one run, so both share the machine's noise.

A scratch database is filled as `bench/api_latency.py` fills it (its `seed`: 384x3 plates, 4
inspections each, one active model, ~3% hits) and a lims token is made
(`marco_svc.tokens`). Then both servers run at once as subprocesses on the same database:

    gunicorn  gunicorn -c deploy/gunicorn.conf.py marco_svc.wsgi:application
              (inline `--workers --threads --worker-class gthread` while that file is
              missing; `--gunicorn-workers`/`--gunicorn-threads` set them)
    waitress  marco-svc serve  (MARCO_SCORING_ENABLED=false, no watched folders)

Both get MARCO_DATABASE_URL, MARCO_DATA_DIR, MARCO_HOST, MARCO_PORT. wrk drives each
endpoint for `--duration` seconds with `--connections` connections on `--threads` threads
(a Lua script sets `Authorization: Bearer` and picks the path of every request):

    hits   /api/v1/hits?since=<walk>&limit=100  (each wrk thread walks the feed with a
           stride from its own start, so positions spread over the whole feed)
    plate  /api/v1/plates/<random barcode>      (counts)

Each round runs every endpoint on each server in turn (the server order alternates per
round), after a short warm-up of each. Per server and endpoint: requests/s, p50 and p99
milliseconds (wrk `--latency`, as seen by the client: network stack included) and errors
(non-2xx answers and socket errors; any error fails the run). With several rounds the
medians over rounds are reported.

    python bench/load_test.py [--postgres SERVER_URL] [--scores 100000] [--threads 2]
                              [--connections 16] [--duration 20] [--rounds 1]
                              [--servers gunicorn,waitress]

The table is followed by one JSON line (the last line): per server and endpoint `rps`,
`p50_ms`, `p99_ms`, and `gunicorn_vs_waitress_rps_<endpoint>` ratios. wrk must be on PATH
(`apt-get install wrk`), gunicorn in this interpreter's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_latency import DEFAULT_SERVER, seed  # noqa: E402  (the 100,000-score database)
from ingest_burst import scratch_postgres  # noqa: E402  (a throw-away database)

ENDPOINTS = ("hits", "plate")
SERVERS = ("gunicorn", "waitress")
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
BIN = Path(sys.executable).parent
HITS_STRIDE = 997  # feed positions between two polls of one wrk thread

LUA_COMMON = """
wrk.headers["Authorization"] = "Bearer {token}"
local counter = 0
local offset = 0
local thread_count = 0
function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end
function init(args)
  offset = (thread_index or 0) * 7919
  math.randomseed(1 + (thread_index or 0))
end
"""

LUA_REQUEST = {
    "hits": """
function request()
  counter = counter + 1
  local since = (offset + counter * {stride}) % {feed_end}
  return wrk.format("GET", "/api/v1/hits?since=" .. since .. "&limit=100")
end
""",
    "plate": """
local barcodes = {{{barcodes}}}
function request()
  return wrk.format("GET", "/api/v1/plates/" .. barcodes[math.random(#barcodes)])
end
""",
}


@dataclass
class Server:
    """One HTTP server under test: its name, port, command line and process."""

    name: str
    port: int
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def prepare(url: str, work: Path, scores: int, inspections: int) -> tuple[dict[str, Any], str]:
    """Seed the database at `url` (api_latency's bulk fill) and make a lims token."""
    from marco_svc import tokens
    from marco_svc.config import load_settings
    from marco_svc.runtime import open_runtime

    settings = load_settings(env={}, data_dir=work / "data", database_url=url)
    runtime = open_runtime(settings, upgrade=True)
    try:
        seeded = seed(runtime, work, scores, inspections)
        _, secret = tokens.create(runtime.db, "lims", "bench-load")
    finally:
        runtime.close()
    return seeded, secret


def lua_scripts(folder: Path, seeded: dict[str, Any], token: str) -> dict[str, Path]:
    """One wrk script per endpoint: the bearer header and the path of each request."""
    barcodes = ", ".join(f'"{barcode}"' for barcode in seeded["barcodes"])
    values = {"stride": HITS_STRIDE, "feed_end": seeded["scores"], "barcodes": barcodes}
    scripts = {}
    for name in ENDPOINTS:
        body = LUA_COMMON.format(token=token) + LUA_REQUEST[name].format(**values)
        scripts[name] = folder / f"{name}.lua"
        scripts[name].write_text(body)
    return scripts


def gunicorn_command(port: int, workers: int, threads: int) -> tuple[list[str], str]:
    """gunicorn with the deploy configuration (its workers and threads unless given), or
    inline options while it is missing."""
    base = [str(BIN / "gunicorn")]
    if GUNICORN_CONF.exists():
        command = [*base, "-c", str(GUNICORN_CONF)]  # it binds MARCO_HOST:MARCO_PORT
        if workers:
            command += ["--workers", str(workers)]
        if threads:
            command += ["--threads", str(threads)]
        how = f"-c {GUNICORN_CONF.relative_to(ROOT)}"
    else:
        workers, threads = workers or os.cpu_count() or 2, threads or 4
        command = [
            *base,
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--worker-class", "gthread", "--threads", str(threads)),
        ]
        how = f"inline --workers {workers} --worker-class gthread --threads {threads}"
    return [*command, "marco_svc.wsgi:application"], how


def server_env(url: str, data_dir: Path, port: int) -> dict[str, str]:
    """The environment of one server: the seeded database, data folder and port."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MARCO_")}
    env.update(
        MARCO_DATABASE_URL=url,
        MARCO_DATA_DIR=str(data_dir),
        MARCO_HOST="127.0.0.1",
        MARCO_PORT=str(port),
        MARCO_SCORING_ENABLED="false",
        MARCO_HEATMAPS_FOR_HITS="false",
        MARCO_LOG_LEVEL="WARNING",
    )
    return env


def start(server: Server, env: dict[str, str]) -> None:
    """Start the server in its own process group, its output into its log file."""
    with server.log.open("wb") as log:
        server.process = subprocess.Popen(
            server.command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """One GET: status and body (0 when nothing answers)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_ready(server: Server, token: str, seeded: dict[str, Any], timeout: float) -> None:
    """Until /healthz answers 200 and the hits poll returns hits; the log on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            break
        if get(f"{server.base}/healthz")[0] == 200:
            status, body = get(f"{server.base}/api/v1/hits?since=0&limit=10", token)
            plate = get(f"{server.base}/api/v1/plates/{seeded['barcodes'][0]}", token)[0]
            if status == 200 and json.loads(body)["hits"] and plate == 200:
                return
            raise SystemExit(f"{server.name}: hits {status} {body[:300]!r}, plate {plate}")
        time.sleep(0.5)
    tail = server.log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"{server.name} did not come up on port {server.port}:\n{tail}")


def processes(server: Server) -> str:
    """How many worker processes the gunicorn master runs now (its child processes)."""
    if server.process is None:
        return "not started"
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    try:
        return f"{len(children.read_text().split())} workers"
    except OSError:
        return "workers unknown"


def stop(server: Server) -> None:
    """SIGTERM to the server's process group (its own), SIGKILL after 30 s."""
    process = server.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def to_ms(value: str, unit: str) -> float:
    """A wrk duration in milliseconds."""
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
    return float(value) * scale[unit]


def parse_wrk(text: str) -> dict[str, float]:
    """requests/s, p50/p99 ms, requests and errors from `wrk --latency` output."""
    percentiles = {
        int(q): to_ms(value, unit)
        for q, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    requests = re.search(r"^\s+(\d+) requests in", text, re.M)
    if rps is None or requests is None or 50 not in percentiles or 99 not in percentiles:
        raise SystemExit(f"unexpected wrk output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        text,
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentiles[50],
        "p99_ms": percentiles[99],
        "requests": float(requests.group(1)),
        "errors": float(errors),
    }


def wrk(server: Server, script: Path, args: argparse.Namespace, seconds: int) -> dict[str, float]:
    """One wrk run against `server`; its parsed figures."""
    command = [
        *("wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s"),
        *("--timeout", "10s", "--latency", "-s", str(script), server.base),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def run_rounds(servers: list[Server], scripts: dict[str, Path], args: argparse.Namespace) -> None:
    """Warm up each server, then each round: every endpoint on every server in turn."""
    for server in servers:
        for name in ENDPOINTS:
            wrk(server, scripts[name], args, args.warmup)
    for round_index in range(args.rounds):
        order = servers if round_index % 2 == 0 else servers[::-1]
        for name in ENDPOINTS:
            for server in order:
                figures = wrk(server, scripts[name], args, args.duration)
                if figures["errors"]:
                    raise SystemExit(f"{server.name} {name}: {figures['errors']:.0f} errors")
                server.results.setdefault(name, []).append(figures)
                print(
                    f"round {round_index + 1} {server.name:<9} {name:<6} "
                    f"{figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:6.2f} ms  "
                    f"p99 {figures['p99_ms']:7.2f} ms",
                    flush=True,
                )


def medians(server: Server) -> dict[str, dict[str, float]]:
    """Per endpoint: the median of each figure over the rounds."""
    return {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in server.results.items()
    }


def report(servers: list[Server], args: argparse.Namespace, context: dict[str, Any]) -> None:
    """The table, then one JSON line with every figure and the ratios."""
    print(
        f"\n{context['scores']:,} scores ({context['hits']:,} hits), {context['plates']} plates; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds} round(s); "
        f"{os.cpu_count()} CPUs; load average {context['load'][0]:.1f} before, "
        f"{context['load'][1]:.1f} after; gunicorn {context['gunicorn']}"
    )
    print(f"{'server':<9} {'endpoint':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}")
    line: dict[str, Any] = {"scores": context["scores"], "cpus": os.cpu_count()}
    line.update(threads=args.threads, connections=args.connections, duration_s=args.duration)
    figures = {server.name: medians(server) for server in servers}
    for name, endpoints in figures.items():
        for endpoint, f in endpoints.items():
            print(
                f"{name:<9} {endpoint:<8} {f['rps']:>8.1f} {f['p50_ms']:>8.2f} "
                f"{f['p99_ms']:>8.2f} {f['requests']:>9.0f}"
            )
            for key in ("rps", "p50_ms", "p99_ms"):
                line[f"{name}_{endpoint}_{key}"] = round(f[key], 2)
    if {"gunicorn", "waitress"} <= figures.keys():
        for endpoint in ENDPOINTS:
            ratio = figures["gunicorn"][endpoint]["rps"] / figures["waitress"][endpoint]["rps"]
            line[f"gunicorn_vs_waitress_rps_{endpoint}"] = round(ratio, 2)
            print(f"gunicorn / waitress req/s, {endpoint}: {ratio:.2f}x")
    line["gunicorn_config"] = context["gunicorn"]
    print(json.dumps(line))


def build_servers(args: argparse.Namespace, work: Path) -> tuple[list[Server], str]:
    """The servers asked for, each on its own port; how gunicorn is configured."""
    servers, how = [], ""
    for offset, name in enumerate(args.servers):
        port = args.port + offset
        if name == "gunicorn":
            command, how = gunicorn_command(port, args.gunicorn_workers, args.gunicorn_threads)
        else:
            command = [str(BIN / "marco-svc"), "serve", "--port", str(port)]
        servers.append(Server(name, port, command, work / f"{name}.log"))
    return servers, how


def measure(url: str, args: argparse.Namespace, work: Path) -> None:
    """Seed, start the servers, drive them with wrk, report; the servers always stop."""
    seeded, token = prepare(url, work, args.scores, args.inspections)
    print(
        f"seeded {seeded['scores']:,} scores ({seeded['hits']:,} hits, {seeded['plates']} "
        f"plates) in {seeded['seconds']:.1f} s",
        flush=True,
    )
    scripts = lua_scripts(work, seeded, token)
    servers, how = build_servers(args, work)
    try:
        for server in servers:
            start(server, server_env(url, work / "data", server.port))
        for server in servers:
            wait_ready(server, token, seeded, args.start_timeout)
        time.sleep(args.settle)  # gunicorn's other workers finish importing the app
        load_before = os.getloadavg()[0]
        run_rounds(servers, scripts, args)
        how += "".join(f" ({processes(s)})" for s in servers if s.name == "gunicorn")
        load = (load_before, os.getloadavg()[0])
    finally:
        for server in servers:
            stop(server)
    context = {**seeded, "load": load, "gunicorn": how or "not run"}
    report(servers, args, context)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_SERVER, help=f"server URL ({DEFAULT_SERVER})")
    parser.add_argument("--scores", type=int, default=100_000, help="stored scores (100000)")
    parser.add_argument("--inspections", type=int, default=4, help="per plate (4)")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("-c", "--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("-d", "--duration", type=int, default=20, help="seconds per run (20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per run (3)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians reported (1)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="gunicorn,waitress")
    parser.add_argument("--port", type=int, default=18480, help="first port (18480)")
    parser.add_argument("--gunicorn-workers", type=int, default=0, help="override (conf's)")
    parser.add_argument("--gunicorn-threads", type=int, default=0, help="override (conf's)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start (5)")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds (120)")
    args = parser.parse_args()
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        parser.error(f"--servers: choose from {', '.join(SERVERS)}")
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="marco-load-") as tmp:
        url, drop = scratch_postgres(args.postgres)
        try:
            measure(url, args, Path(tmp))
        finally:
            drop()


if __name__ == "__main__":
    main()
