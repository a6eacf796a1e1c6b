"""One knob for the CPU threads of a scoring process (setting scoring_threads).

Several workers on one machine, each with a thread per core in OpenBLAS (numpy), OpenMP
and OpenCV, slow each other down: spinning pools fight over the cores (measured with
bench/worker_throughput.py: two one-thread workers 0.61x one worker with the libraries'
default pools, 1.85x with them capped). LiteRT's interpreter gets its count where it is
opened (`nets.runner.open_runner`).
"""

from __future__ import annotations

import cv2
from threadpoolctl import threadpool_limits


def limit_threads(threads: int) -> None:
    """Cap OpenCV's and the native BLAS / OpenMP thread pools of this process."""
    cv2.setNumThreads(threads)
    threadpool_limits(limits=threads)
