"""The imager-PC install: the wheel with the `edge` extra alone, in a fresh environment, stays
lean (no TensorFlow, database, web server or OpenCV) and runs `marco-svc edge`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_wheel import _clean_env, fresh_install, wheel

__all__ = ["wheel"]  # the module-scoped fixture that builds the checkout's wheel

pytestmark = pytest.mark.slow

# The goal: under 150 MB. Installed as deploy/edge/ says (`pip install --no-compile`:
# bytecode is written only for what the agent imports, not for numpy's tests and the rest) and
# measured after the agent's imports: 143.4 MB (ai-edge-litert 56.9, numpy 54.5 with its
# libraries, pillow 19.3). pip's default precompiling adds ~20 MB of never-used bytecode
# (163.6 MB). The full install is 2.1 GB.
EDGE_LIMIT_MB = 150
# What the agent imports when it scores: their bytecode is part of its footprint.
AGENT_IMPORTS = (
    "import marco_svc.edge.agent, marco_svc.cli, numpy, PIL.Image, simplejpeg, "
    "watchdog.observers; from ai_edge_litert.interpreter import Interpreter"
)
# Distributions (normalized names) and import names that belong to the server, never the edge.
SERVER_ONLY = re.compile(r"^(tensorflow.*|tf-keras|keras|flask.*|sqlalchemy|alembic|psycopg.*"
                         r"|opencv.*|cv2|waitress)$")  # fmt: skip


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _usage(folder: Path) -> dict[str, int]:
    """Bytes under each entry of `folder` (apparent sizes; a hard-linked file counts once)."""
    seen: set[tuple[int, int]] = set()
    sizes: dict[str, int] = {}
    for entry in folder.iterdir():
        paths = [entry] if not entry.is_dir() else [p for p in entry.rglob("*") if p.is_file()]
        total = 0
        for path in paths:
            stat = path.lstat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
        sizes[entry.name] = total
    return sizes


@pytest.mark.timeout(1800)
def test_a_fresh_edge_install_is_lean_and_runs_the_edge_agent(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("edge")
    python, pip = fresh_install(wheel, base, "edge", "--no-compile")
    venv = python.parent.parent
    imported = subprocess.run(
        [str(python), "-c", AGENT_IMPORTS],
        capture_output=True, text=True, env=_clean_env(), cwd=base, timeout=300,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-4000:]

    listed = subprocess.run(
        [*pip, "list", "--format", "json"],
        capture_output=True, text=True, env=_clean_env(), cwd=base, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    installed = {_normalized(d["name"]): d["version"] for d in json.loads(listed.stdout)}
    assert "marco-svc" in installed and "ai-edge-litert" in installed
    assert not [name for name in installed if SERVER_ONLY.match(name)], sorted(installed)

    where = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, env=_clean_env(), cwd=base, timeout=300,
    )  # fmt: skip
    site_packages = Path(where.stdout.strip())
    assert site_packages.is_relative_to(venv), where.stderr
    sizes = _usage(site_packages)
    assert not [name for name in sizes if SERVER_ONLY.match(name.lower())], sorted(sizes)
    total_mb = sum(sizes.values()) / 2**20
    largest = ", ".join(
        f"{name} {size / 2**20:.1f}"
        for name, size in sorted(sizes.items(), key=lambda item: -item[1])[:8]
    )
    print(f"edge site-packages: {total_mb:.1f} MB (largest, MB: {largest})")
    problems: list[str] = []  # one run reports both the size and the command line
    if total_mb >= EDGE_LIMIT_MB:
        problems.append(f"site-packages: {total_mb:.1f} MB >= {EDGE_LIMIT_MB} MB ({largest})")

    # The agent's command line starts without the server's packages; the options are the ones
    # the services in deploy/edge/ pass.
    (base / "none.toml").write_text("")
    env = _clean_env(MARCO_DATA_DIR=str(base / "data"), MARCO_CONFIG=str(base / "none.toml"))
    script = python.parent / "marco-svc"
    done = subprocess.run(
        [str(script), "edge", "--help"],
        capture_output=True, text=True, env=env, cwd=base, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        problems.append(f"marco-svc edge --help: exit {done.returncode}\n{done.stderr[-4000:]}")
    else:
        missing = [o for o in ("--watch", "--server", "--state") if o not in done.stdout]
        if missing:
            problems.append(f"marco-svc edge --help lacks {missing}:\n{done.stdout}")
    assert not problems, "\n".join(problems)
