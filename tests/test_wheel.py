"""The wheel: built from the checkout and installed elsewhere, it carries the shipped default
model (and the training presets) and scores with it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from marco_svc import registry
from tests.helpers import write_jpeg

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_IN_WHEEL = "marco_svc/_shipped/"
# What a build of the checkout must not see: local environments, build leftovers, caches.
_NOT_SOURCE = {".git", ".venv", "venv", "build", "dist", "__pycache__", "node_modules"}
_NOT_SOURCE_AT_ROOT = {"var", "out"}


def _ignored(folder: str, names: list[str]) -> set[str]:
    at_root = Path(folder) == ROOT
    return {
        name
        for name in names
        if name in _NOT_SOURCE
        or name.endswith((".egg-info", "_cache", ".pyc"))
        or (at_root and name in _NOT_SOURCE_AT_ROOT)
    }


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _backend_here() -> bool:
    """Whether this environment's setuptools is new enough to build without isolation."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    needed = next(re.sub(r"^setuptools\s*>=\s*", "", r) for r in requires if "setuptools" in r)
    try:
        return _version(metadata.version("setuptools")) >= _version(needed)
    except metadata.PackageNotFoundError:
        return False


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment less anything pointing into the checkout or at another install."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} and not key.startswith("MARCO_")
    }
    return {**env, **extra}


def _git_files(folder: str) -> set[str] | None:
    """The files git tracks under `folder`, relative to it; None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", folder], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    return {name.removeprefix(f"{folder}/") for name in done.stdout.split("\0") if name}


def fresh_install(wheel: Path, base: Path, extra: str, *options: str) -> tuple[Path, list[str]]:
    """A new venv under `base` (outside the checkout) with `wheel[extra]` installed (extra pip
    `options`, e.g. --no-compile): its python, and the pip command line that manages it."""
    assert not base.resolve().is_relative_to(ROOT)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    started = time.monotonic()
    install = subprocess.run(
        [*pip, "install", "-q", *options, f"{wheel}[{extra}]"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=base,
        timeout=1500,
    )
    print(f"pip install {wheel.name}[{extra}] took {time.monotonic() - started:.0f} s")
    assert install.returncode == 0, (install.stdout + install.stderr)[-4000:]
    return python, pip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout, built from a clean copy (no stale build/ can leak in)."""
    source = tmp_path_factory.mktemp("source") / "marco-svc"
    shutil.copytree(ROOT, source, ignore=_ignored, symlinks=True)
    out = tmp_path_factory.mktemp("wheel")
    # Without isolation when this environment has the build backend; else pip fetches it.
    isolation = ["--no-build-isolation"] if _backend_here() else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", *isolation]
    done = subprocess.run(
        [*command, "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    complaints = [
        line
        for line in log.splitlines()
        if ("licen" in line.lower() and "deprecat" in line.lower())
        or "absent from the `packages` configuration" in line
    ]
    assert not complaints, "\n".join(complaints)
    (built,) = out.glob("marco_svc-*.whl")
    return built


def test_the_wheel_carries_the_shipped_models_presets_and_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix(SHIPPED_IN_WHEEL) for n in names if n.startswith(SHIPPED_IN_WHEEL)}
    on_disk = {
        path.relative_to(ROOT / "models").as_posix()
        for path in (ROOT / "models").rglob("*")
        if path.is_file() and not _ignored("", list(path.relative_to(ROOT).parts))
    }
    assert shipped == on_disk
    tracked = _git_files("models")
    if tracked is not None:  # the wheel ships what git has: no local leftovers
        assert shipped == tracked
    default = registry.default_shipped()
    assert default is not None
    folder = default.folder.relative_to(registry.SHIPPED_DIR).as_posix()
    assert {f"{folder}/{a.file}" for a in default.card.artifacts.values()} <= shipped
    assert {"DEFAULT", f"{folder}/card.json", "presets/default.toml"} <= shipped
    # The package list in pyproject.toml is explicit: every module of the checkout ships.
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in ("marco_svc", "imager_adapters")
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, sorted(modules - names)
    assert "marco_svc/db/migrations/script.py.mako" in names
    web = {  # the web page's templates and static files
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (ROOT / "marco_svc" / "web" / folder).iterdir()
    }
    assert web and web <= names, sorted(web - names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert wheel.stat().st_size < 20 * 1024 * 1024


def test_the_shipped_models_are_found_when_the_package_is_imported_from_a_zip(
    wheel: Path, tmp_path: Path
) -> None:
    """importlib.resources gives a zip's folder; the registry extracts it to score from."""
    probe = (
        "import json, marco_svc\n"
        "from marco_svc import registry\n"
        "model = registry.default_shipped()\n"
        "model.card.verify(model.folder)\n"
        "print(json.dumps([marco_svc.__file__, str(registry.SHIPPED_DIR), model.ref,\n"
        "    sorted(p.name for p in (registry.SHIPPED_DIR / 'presets').glob('*.toml'))]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(PYTHONPATH=str(wheel)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    package, shipped_dir, ref, presets = json.loads(done.stdout)
    assert package.startswith(str(wheel))
    assert not Path(shipped_dir).is_relative_to(ROOT)
    assert not Path(shipped_dir).exists()  # the extracted copy is removed at exit
    assert ref == registry.default_shipped().ref
    assert sorted(p.name for p in (ROOT / "models" / "presets").glob("*.toml")) == presets


@pytest.mark.timeout(1800)
def test_a_fresh_install_of_the_wheel_scores_with_the_shipped_default(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("fresh")
    python, _ = fresh_install(wheel, base, "server")
    venv = python.parent.parent

    work = base / "work"
    image = write_jpeg(work / "drop.jpg", seed=7, width=320, height=256)
    env = _clean_env(MARCO_DATA_DIR=str(base / "data"), MARCO_CONFIG=str(base / "none.toml"))
    (base / "none.toml").write_text("")

    where = subprocess.run(
        [str(python), "-c", "import json, marco_svc\n"
         "from marco_svc import registry\n"
         "print(json.dumps([marco_svc.__file__, str(registry.SHIPPED_DIR)]))"],
        capture_output=True, text=True, cwd=work, env=env, timeout=300,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    package, shipped_dir = (Path(p) for p in json.loads(where.stdout))
    assert not package.resolve().is_relative_to(ROOT)
    assert package.resolve().is_relative_to(venv.resolve())
    assert shipped_dir == package.parent / "_shipped"
    assert (shipped_dir / "presets" / "default.toml").is_file()

    default = registry.default_shipped()
    assert default is not None
    heads = default.card.heads  # label -> probability for each head's labels ("both": two)
    script = python.parent / "marco-svc"
    for artifact in ([], ["--artifact", "tflite-int8"]):
        done = subprocess.run(
            [str(script), "score", str(image), "--format", "jsonl", *artifact],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        (line,) = done.stdout.splitlines()
        record = json.loads(line)
        assert "error" not in record
        assert record["model"] == default.ref
        assert record["path"] == str(image)
        assert set(record["probs"]) == {label for labels in heads.values() for label in labels}
        for labels in heads.values():
            assert sum(record["probs"][label] for label in labels) == pytest.approx(1, abs=1e-4)
        assert record["top"] in record["probs"]

    listed = subprocess.run(
        [str(script), "models", "list", "--json"],
        capture_output=True, text=True, cwd=work, env=env, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    (entry,) = [m for m in json.loads(listed.stdout) if m["ref"] == default.ref]
    assert entry["where"] == "shipped"
    assert Path(entry["folder"]).is_relative_to(shipped_dir)
