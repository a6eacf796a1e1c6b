"""Networks, their model cards, preprocessing and runners."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def silenced_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: native libraries' start-up lines stay off stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow now (if installed) without its C++ log lines on stderr; best done
    before other threads start (see `_SilentLoader`)."""
    quiet_tensorflow_when_imported()
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow  # noqa: F401


class _SilentLoader(importlib.abc.Loader):
    """Runs another loader's module code with stderr silenced, when no other thread could
    be writing to it (their lines would be lost: the silencing is process-wide)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        return self.loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        if threading.active_count() > 1:
            self.loader.exec_module(module)  # type: ignore[arg-type]
            return
        with silenced_stderr():
            self.loader.exec_module(module)  # type: ignore[arg-type]


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` on the path as usual, with a loader that silences stderr."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilentLoader(spec.loader)
        return spec


def quiet_tensorflow_when_imported() -> None:
    """Whenever TensorFlow gets imported (by whatever command needs it), keep its C++
    start-up lines off stderr; a command that never needs it never imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules or any(
        isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
