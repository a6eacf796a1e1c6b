"""When a watched file counts as complete, judged from explicit clocks (no sleeping)."""

from __future__ import annotations

from dataclasses import dataclass

from marco_svc.watch.events import EventInbox
from marco_svc.watch.stability import Pending, Verdict

WALL = 1_700_000_000.0  # the wall clock of these tests; the monotonic clock starts at 0


@dataclass
class Stat:
    st_size: int
    st_mtime: float

    @property
    def st_mtime_ns(self) -> int:
        return int(self.st_mtime * 1e9)


def look(pending: Pending, path: str, stat: Stat | None, now: float) -> Verdict:
    return pending.check(path, stat, now, WALL + now)  # type: ignore[arg-type]


def test_a_file_is_ready_once_stable_for_the_settle_time() -> None:
    pending = Pending(settle=2.0, max_wait=60.0)
    pending.touch("a.jpg", now=0.0)
    assert pending.due(0.0, 10) == ["a.jpg"]
    assert look(pending, "a.jpg", Stat(100, WALL), 0.0) is Verdict.WAIT
    assert pending.due(1.0, 10) == []
    assert look(pending, "a.jpg", Stat(200, WALL + 1), 1.0) is Verdict.WAIT  # still growing
    assert pending.due(2.9, 10) == []
    assert pending.due(3.0, 10) == ["a.jpg"]
    assert look(pending, "a.jpg", Stat(200, WALL + 1), 3.0) is Verdict.READY


def test_closed_or_moved_in_is_ready_at_once_until_written_again() -> None:
    pending = Pending(settle=2.0, max_wait=60.0)
    pending.touch("a.jpg", now=0.0, complete=True)
    assert look(pending, "a.jpg", Stat(100, WALL), 0.0) is Verdict.READY
    pending.touch("a.jpg", now=0.1)  # a write after the close
    assert look(pending, "a.jpg", Stat(150, WALL + 0.1), 0.1) is Verdict.WAIT
    pending.touch("a.jpg", now=0.2, complete=True)
    assert pending.due(0.2, 10) == ["a.jpg"]
    assert look(pending, "a.jpg", Stat(180, WALL + 0.2), 0.2) is Verdict.READY


def test_an_old_file_is_ready_unless_mtimes_are_not_trusted() -> None:
    trusting, polling = Pending(2.0, 60.0), Pending(2.0, 60.0, trust_mtime=False)
    for pending in (trusting, polling):
        pending.touch("old.jpg", now=5.0)
    assert look(trusting, "old.jpg", Stat(10, WALL - 3600), 5.0) is Verdict.READY
    assert look(polling, "old.jpg", Stat(10, WALL - 3600), 5.0) is Verdict.WAIT
    assert look(polling, "old.jpg", Stat(10, WALL - 3600), 7.0) is Verdict.READY


def test_a_file_that_never_settles_is_stuck_after_max_wait() -> None:
    pending = Pending(settle=2.0, max_wait=10.0)
    pending.touch("a.jpg", now=0.0)
    verdicts = [look(pending, "a.jpg", Stat(n, WALL + n), float(n)) for n in range(0, 12)]
    assert verdicts[:10] == [Verdict.WAIT] * 10
    assert verdicts[10:] == [Verdict.STUCK] * 2


def test_a_vanished_file_is_forgotten() -> None:
    pending = Pending(settle=2.0, max_wait=10.0)
    pending.touch("a.jpg", now=0.0)
    assert look(pending, "a.jpg", None, 0.0) is Verdict.GONE
    assert len(pending) == 0 and "a.jpg" not in pending


def test_retries_back_off_and_give_up_after_max_wait() -> None:
    pending = Pending(settle=1.0, max_wait=10.0)
    pending.touch("a.jpg", now=0.0)
    assert pending.retry_later("a.jpg", now=0.0)
    assert pending.due(0.9, 10) == [] and pending.due(1.0, 10) == ["a.jpg"]
    assert pending.retry_later("a.jpg", now=1.0)
    assert pending.due(2.9, 10) == [] and pending.due(3.0, 10) == ["a.jpg"]
    assert not pending.retry_later("a.jpg", now=10.0)
    assert pending.retry_later("a.jpg", now=10.0, give_up=False)


def test_due_respects_its_limit_and_skips_stale_entries() -> None:
    pending = Pending(settle=1.0, max_wait=10.0)
    for n in range(5):
        pending.touch(f"{n}.jpg", now=0.0)
    pending.forget("0.jpg")
    assert pending.due(0.0, 3) == ["1.jpg", "2.jpg", "3.jpg"]
    assert pending.due(0.0, 3) == ["4.jpg"]


def test_a_full_inbox_drops_the_event_and_asks_for_a_rescan() -> None:
    asked = []
    inbox = EventInbox(2, lambda: asked.append(True))
    for n in range(3):
        inbox.push("file", f"{n}.jpg")
    assert (inbox.dropped, asked) == (1, [True])
    assert not inbox.settled()
    inbox.queue.get_nowait(), inbox.done()
    inbox.queue.get_nowait(), inbox.done()
    assert inbox.settled()
