"""gunicorn settings for the marco-svc web processes (`marco_svc.wsgi:application`).

Install as /etc/marco-svc/gunicorn.conf.py (the systemd unit and the image use that path).
Address, port and threads per worker follow the marco-svc settings (MARCO_HOST,
MARCO_PORT, MARCO_THREADS or the MARCO_CONFIG file); the number of worker processes is
MARCO_WEB_WORKERS (default: 2 x cores + 1, at most 4). Each worker holds a database
connection per busy thread and, without a broker, TensorFlow and the model once it has
drawn a heatmap (~0.6 GB more); 4 workers of 8 threads already serve 32 requests at once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from marco_svc.config import load_settings

MAX_DEFAULT_WORKERS = 4


def _cores() -> int:
    """CPUs this process may run on (a container's or cgroup's share where the OS says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_settings = load_settings()

_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host  # IPv6
bind = f"{_host}:{_settings.port}"
workers = int(os.environ.get("MARCO_WEB_WORKERS") or min(2 * _cores() + 1, MAX_DEFAULT_WORKERS))
worker_class = "gthread"  # threads share a worker's pool and model; a slow request blocks none
threads = _settings.threads
backlog = _settings.http_backlog

# A worker whose main loop is silent this long is killed and replaced (gthread's loop
# keeps beating while a request runs, so long uploads and heatmaps are not cut short).
timeout = 60
# SIGTERM: stop accepting, finish requests in flight for up to this long (systemd's
# TimeoutStopSec and compose's stop_grace_period sit above it).
graceful_timeout = 30
keepalive = 5  # nginx keeps upstream connections open between requests
# Replace a worker now and then, so slow growth (fragmentation, caches) never adds up;
# the jitter keeps workers from restarting all at once.
max_requests = 5000
max_requests_jitter = 500

limit_request_line = 8190  # long query strings of listing filters
limit_request_fields = 100
limit_request_field_size = 8190

# nginx in front sets X-Forwarded-Proto; trust it only from these addresses (compose: "*",
# since nginx is another container and the web port is not published).
forwarded_allow_ips = os.environ.get("MARCO_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

accesslog = "-"  # stdout: journald or the container log
errorlog = "-"
access_log_format = '%({x-forwarded-for}i)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Not preloaded: the app is built in each worker after the fork, so each worker opens its
# own database connections and TensorFlow (neither survives a fork), and a worker that
# fails to start (database unreachable or not migrated) says so in its own log.
preload_app = False
# Workers' heartbeat files in memory: a slow or full disk under /tmp never stalls them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn >= 25 opens a control socket under $HOME; the units and the image need none.
control_socket_disable = True
proc_name = "marco-svc-web"


def worker_exit(_server: Any, _worker: Any) -> None:
    """Stop the worker's service (the heatmap pool) as it leaves."""
    wsgi = sys.modules.get("marco_svc.wsgi")
    if wsgi is not None:
        wsgi.service.stop()
