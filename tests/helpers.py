"""Small test helpers: run the real console script, make JPEG files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (), **kw: Any
) -> subprocess.CompletedProcess:
    """Run `python -m marco_svc ARGS` as a user would (after `prefix`), capturing output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("MARCO_DEBUG", None)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "marco_svc", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        **kw,
    )


_LITERT_PROBE = """
import json, sys
from pathlib import Path
from marco_svc.nets.card import ModelCard
from marco_svc.nets.runner import open_runner
folder = Path(sys.argv[1])
runner = open_runner(ModelCard.load(folder), folder, sys.argv[2])
x = runner.preprocess(Path(sys.argv[3]).read_bytes())[None]
out = runner.predict(x)
print(json.dumps({
    "tf": "tensorflow" in sys.modules,
    "keras": "keras" in sys.modules,
    "graph": getattr(runner, "lite_preprocess", None) is not None,
    "input": list(x.shape),
    "outputs": {scheme: list(value.shape) for scheme, value in out.items()},
}))
"""


def litert_in_fresh_python(
    folder: Path, fmt: str, image: Path
) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """Score `image` with the model's `fmt` artifact in a new interpreter; what it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _LITERT_PROBE, str(folder), fmt, str(image)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(done.stdout)


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A small valid JPEG with seeded content (different seeds give different bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_jpeg(path: Path, seed: int = 0, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed=seed, **kw))
    return path


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def api_client(service: Any, role: str = "admin", name: str | None = None) -> Any:
    """A Flask test client of the service's app that sends a new token of `role`."""
    from marco_svc import tokens
    from marco_svc.api import create_app

    _, secret = tokens.create(service.runtime.db, role, name)
    client = create_app(service).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client
