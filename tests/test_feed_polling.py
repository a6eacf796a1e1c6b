"""The LIMS hits feed under load: a client looping on `GET /hits?since=` while two scorers
commit concurrently receives every hit exactly once, in strictly increasing positions; and,
on PostgreSQL, why the cursor is a feed position claimed under a lock and not Score.id."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from marco_svc import feed, registry
from marco_svc.db.models import Drop, Image, Inspection, ModelVersion, Plate, Score
from marco_svc.db.session import Database
from marco_svc.runtime import Runtime
from marco_svc.scoring.lab_rules import LabRules
from marco_svc.scoring.store import ScoreResult, save_scores
from marco_svc.service import Service
from tests.helpers import api_client, wait_for
from tests.nets_helpers import write_fake_model_folder

IMAGES = 500
POLL_LIMIT = 7
CRYSTAL = {"Clear": 0.1, "Crystals": 0.8, "Precipitate": 0.05, "Other": 0.05}
CLEAR = {"Clear": 0.85, "Crystals": 0.05, "Precipitate": 0.05, "Other": 0.05}
ROWS = "ABCDEFGHIJKLMNOP"


def active_model(runtime: Runtime, tmp_path: Path) -> ModelVersion:
    """A registered, active model version: the one `/hits` follows by default."""
    folder = write_fake_model_folder(
        tmp_path / "model-src", name="poller", version="1", arch="marco-inception-v3"
    )
    stored = registry.register(runtime.settings, folder, db=runtime.db)
    registry.activate(runtime.db, stored.ref)
    with runtime.db.session() as session:
        return session.scalars(select(ModelVersion).where(ModelVersion.name == "poller")).one()


def add_images(runtime: Runtime, count: int) -> list[int]:
    """`count` new images on one 384x2 plate, inserted in one transaction (no files)."""
    with runtime.db.session() as session:
        plate = Plate(barcode="POLL-1", wells=384, drops=2)
        inspection = Inspection(plate=plate, imaged_at=datetime(2024, 6, 1, 9), imager="test")
        images = []
        for n in range(count):
            well, drop_number = divmod(n, 2)
            row, column = divmod(well, 24)
            drop = Drop(
                plate=plate,
                well=f"{ROWS[row]}{column + 1}",
                drop_number=drop_number + 1,
                row_index=row,
                column_number=column + 1,
            )
            images.append(
                Image(
                    inspection=inspection,
                    drop=drop,
                    uri=f"file:///poll/{n}.jpg",
                    sha256=f"{n:064x}",
                    width=64,
                    height=48,
                )
            )
        session.add_all(images)
        session.flush()
        return [image.id for image in images]


class SlowCommits(Database):
    """runtime.db's engine and sessions, but every transaction waits a few ms between its
    last statement and its commit, and records when it began and ended: the other scorer's
    transactions get a wide window to overlap and to commit first if nothing orders them."""

    def __init__(self, db: Database, name: str, seed: int, log: list) -> None:
        self.engine = db.engine
        self.sessions = db.sessions
        self.name = name
        self.rng = random.Random(seed)
        self.log = log

    @contextmanager
    def session(self) -> Iterator[Session]:
        began = time.monotonic()
        with super().session() as session:
            yield session
            session.flush()
            time.sleep(self.rng.uniform(0.0, 0.006))
        self.log.append((self.name, began, time.monotonic()))


def overlapping_transactions(log: list[tuple[str, float, float]]) -> int:
    """Pairs of transactions of different scorers that were open at the same time."""
    return sum(
        1
        for i, (name, began, ended) in enumerate(log)
        for other, began2, ended2 in log[i + 1 :]
        if other != name and began < ended2 and began2 < ended
    )


def run_in_thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised by the test after join
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_poller_gets_every_hit_once_while_two_scorers_commit(
    runtime: Runtime, tmp_path: Path
) -> None:
    model = active_model(runtime, tmp_path)
    image_ids = add_images(runtime, IMAGES)
    crystal = set(random.Random(7).sample(image_ids, IMAGES // 3))
    rules = LabRules.parse("threshold:0.5")
    stop = threading.Event()
    log: list[tuple[str, float, float]] = []
    errors: list[BaseException] = []

    def result(image_id: int) -> ScoreResult:
        probs = CRYSTAL if image_id in crystal else CLEAR
        return ScoreResult(image_id, probs, max(probs, key=probs.get), {}, 3.0)

    def scorer(k: int) -> Callable[[], None]:
        db = SlowCommits(runtime.db, f"scorer-{k}", seed=100 + k, log=log)
        rng = random.Random(k)
        mine = image_ids[k::2]  # interleaved: the two scorers' ids alternate

        def score() -> None:
            at = 0
            while at < len(mine) and not stop.is_set():
                batch = mine[at : at + rng.randint(1, 12)]
                at += len(batch)
                save_scores(db, model, [result(i) for i in batch], rules, {})
                time.sleep(rng.uniform(0.0, 0.003))

        return score

    client = api_client(Service(runtime), "lims")
    received: list[int] = []
    positions: list[int] = []
    during_scoring = 0  # hits received by polls that began while a scorer ran
    scorers = [run_in_thread(scorer(k), errors) for k in (0, 1)]
    try:
        cursor = "0"
        deadline = time.monotonic() + 120
        while True:
            finished = not any(t.is_alive() for t in scorers)  # before the poll: all visible
            answer = client.get(f"/api/v1/hits?since={cursor}&limit={POLL_LIMIT}")
            assert answer.status_code == 200, answer.get_data(as_text=True)
            page = answer.get_json()
            received += [hit["id"] for hit in page["hits"]]
            during_scoring += 0 if finished else len(page["hits"])
            positions += [int(hit["position"]) for hit in page["hits"]]
            assert all(hit["score"]["hit"] for hit in page["hits"])
            if page["hits"]:
                assert page["next"] == page["hits"][-1]["position"]
            else:
                assert page["next"] == cursor
            cursor = page["next"]
            if finished and not page["hits"]:
                break
            assert time.monotonic() < deadline, "the scorers or the poller did not finish"
    finally:
        stop.set()
        for thread in scorers:
            thread.join(timeout=60)
    assert not any(t.is_alive() for t in scorers)
    if errors:
        raise errors[0]

    with runtime.db.session() as session:
        hits = set(
            session.scalars(
                select(Score.image_id).where(Score.hit, Score.model_version_id == model.id)
            )
        )
        assert len(session.scalars(select(Score.id)).all()) == IMAGES
    assert hits == crystal
    duplicates = sorted({i for i in received if received.count(i) > 1})
    assert not duplicates, f"hits received more than once: {duplicates}"
    assert not hits - set(received), f"hits never received: {sorted(hits - set(received))}"
    assert len(received) == len(hits)
    assert all(a < b for a, b in pairwise(positions))
    # it really was concurrent: the scorers' transactions overlapped, and the poller read
    # hits while they were still committing
    assert overlapping_transactions(log) > 0
    assert during_scoring > 0


def placeholder_score(image_id: int, model: ModelVersion, feed_seq: int) -> Score:
    return Score(
        image_id=image_id,
        model_version_id=model.id,
        probabilities=CRYSTAL,
        top_class="Crystals",
        p_crystal=0.8,
        hit=True,
        feed_seq=feed_seq,
    )


def waiting_on_a_lock(db: Database) -> bool:
    with db.session() as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_score_ids_commit_out_of_order_but_feed_positions_do_not(
    runtime: Runtime, tmp_path: Path
) -> None:
    """PostgreSQL only (SQLite has one writer at a time, so ids commit in order there)."""
    model = active_model(runtime, tmp_path)
    a, b, c, d = add_images(runtime, 4)
    db = runtime.db
    with db.session() as session:  # the counter row, as the migration makes it
        next(feed.claim(session, feed.SCORES))

    def ids_after(cursor: int) -> list[int]:
        with db.session() as session:
            return list(session.scalars(select(Score.id).where(Score.id > cursor)))

    # The failure mode: an id is handed out at insert, but the row is seen only at commit.
    # (The feed_seq values here are placeholders below the feed; this part keys on ids.)
    first, second = db.sessions(), db.sessions()
    try:
        early = placeholder_score(a, model, feed_seq=-1)
        first.add(early)
        first.flush()  # gets the lower id ...
        late = placeholder_score(b, model, feed_seq=-2)
        second.add(late)
        second.commit()  # ... but the higher id commits first
        seen = ids_after(0)
        assert seen == [late.id] and early.id < late.id
        first.commit()
        assert ids_after(max(seen)) == []  # an id-keyed poller has moved past it for good
        assert early.id in ids_after(0)
    finally:
        first.close()
        second.close()

    # The feed: a position is claimed first, under the counter row's lock until commit,
    # so a second writer waits and gets a higher position that it commits later.
    errors: list[BaseException] = []
    claimed = threading.Event()
    positions: dict[str, int] = {}
    first = db.sessions()
    try:
        positions["first"] = next(feed.claim(first, feed.SCORES))
        first.add(placeholder_score(c, model, positions["first"]))
        first.flush()

        def second_writer() -> None:
            with db.session() as session:
                positions["second"] = next(feed.claim(session, feed.SCORES))
                claimed.set()
                session.add(placeholder_score(d, model, positions["second"]))

        writer = run_in_thread(second_writer, errors)
        wait_for(lambda: waiting_on_a_lock(db), timeout=30, what="the second claim to wait")
        assert not claimed.is_set()
        with db.session() as session:
            nothing = feed.scores_since(session, 0, 10, feed.FeedFilter(), False)
        assert nothing["items"] == [] and nothing["next"] == "0"
        first.commit()
    finally:
        first.rollback()
        first.close()
    writer.join(timeout=30)
    assert not writer.is_alive()
    if errors:
        raise errors[0]
    assert positions["first"] < positions["second"]
    with db.session() as session:
        page = feed.scores_since(session, 0, 10, feed.FeedFilter(), False)
    assert [item["id"] for item in page["items"]] == [c, d]
    assert page["next"] == str(positions["second"])
