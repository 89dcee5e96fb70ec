"""The observer hook the alerts engine uses: called in the ingest transaction, never fatal."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from servertest import ADMIN, AUTH, new_run, post, random_walk
from sqlalchemy import Connection, event, select, text

from sedmon_core.spectrum import WindowSpectrum
from sedmon_server import tables
from sedmon_server.app import create_app
from sedmon_server.ingest import OBSERVER_SAVEPOINT, CheckpointObserver
from sedmon_server.settings import Settings

pytestmark = pytest.mark.postgres


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, list[tuple[str, int]], dict[str, float]]] = []
        self.non_finite: list[tuple[int, dict[str, Any]]] = []

    def on_checkpoint(
        self,
        conn: Connection,
        run: Mapping[str, Any],
        step: int,
        spectra: Mapping[tuple[str, int], WindowSpectrum],
        metrics: Mapping[str, float],
    ) -> None:
        stored = conn.execute(
            select(tables.checkpoints.c.step).where(
                tables.checkpoints.c.run_id == run["id"], tables.checkpoints.c.step == step
            )
        ).scalar_one()
        self.seen.append((stored, run["last_step"], sorted(spectra), dict(metrics)))

    def on_non_finite(
        self, conn: Connection, run: Mapping[str, Any], step: int, details: Mapping[str, Any]
    ) -> None:
        self.non_finite.append((step, dict(details)))


class Broken:
    def on_checkpoint(self, conn: Connection, *args: Any) -> None:
        conn.execute(text("SELECT no_such_column FROM runs"))

    def on_non_finite(self, conn: Connection, *args: Any) -> None:
        raise RuntimeError("boom")


@pytest.fixture()
def observed(postgres_url: str, tmp_path: Path) -> Any:
    recorder = Recorder()
    assert isinstance(recorder, CheckpointObserver)
    app = create_app(
        Settings(database_url=postgres_url, home=tmp_path, admin_token=ADMIN),
        observers=[Broken(), recorder],
        extensions=(),
    )
    yield TestClient(app, headers=AUTH), recorder
    app.state.engine.dispose()


def test_observers_see_each_new_checkpoint_with_its_spectra(observed: Any) -> None:
    client, recorder = observed
    rid = new_run(client, windows=[3])
    cps = random_walk(5, 16)
    for i, cp in enumerate(cps):
        assert post(client, rid, i, cp, {"loss": float(i)}).status_code == 201
    assert post(client, rid, 4, cps[4], {"loss": 4.0}).status_code == 200
    assert [(s, last) for s, last, _, _ in recorder.seen] == [(i, i) for i in range(5)]
    assert [k for _, _, k, _ in recorder.seen] == [[]] * 3 + [[("all", 3)]] * 2
    assert recorder.seen[2][3] == {"loss": 2.0}


def test_observers_hear_of_non_finite_checkpoints(observed: Any) -> None:
    client, recorder = observed
    rid = new_run(client)
    assert post(client, rid, 3, {"all": [float("nan")] * 16}).status_code == 422
    assert recorder.non_finite == [(3, {"groups": ["all"], "metrics": [], "count": 16})]


def test_batch_observes_every_checkpoint_after_writing_them(observed: Any) -> None:
    client, recorder = observed
    rid = new_run(client, windows=[3])
    cps = [{"step": i, "sketch": cp} for i, cp in enumerate(random_walk(6, 16))]
    r = client.post(f"/api/v1/runs/{rid}/checkpoints:batch", json={"checkpoints": cps})
    assert r.status_code == 201
    assert [s for s, _, _, _ in recorder.seen] == list(range(6))
    assert {last for _, last, _, _ in recorder.seen} == {5}


class WritesThenFailsOnOddSteps:
    """Writes a run event per checkpoint, then raises on odd steps (after its write)."""

    def on_checkpoint(
        self, conn: Connection, run: Mapping[str, Any], step: int, *args: Any
    ) -> None:
        conn.execute(
            tables.run_events.insert().values(
                run_id=run["id"],
                kind="observed",
                step=step,
                created_at=run["last_checkpoint_at"],
                details={},
            )
        )
        if step % 2:
            raise RuntimeError("boom after writing")

    def on_non_finite(self, conn: Connection, *args: Any) -> None:
        pass


@pytest.mark.parametrize("batch", [False, True])
def test_a_failing_observer_loses_its_own_writes_only(
    postgres_url: str, tmp_path: Path, batch: bool
) -> None:
    recorder = Recorder()
    app = create_app(
        Settings(database_url=postgres_url, home=tmp_path, admin_token=ADMIN),
        observers=[WritesThenFailsOnOddSteps(), recorder],
        extensions=(),
    )
    client = TestClient(app, headers=AUTH)
    rid = new_run(client, windows=[3])
    cps = random_walk(5, 16)
    if batch:
        body = {"checkpoints": [{"step": i, "sketch": cp} for i, cp in enumerate(cps)]}
        assert client.post(f"/api/v1/runs/{rid}/checkpoints:batch", json=body).status_code == 201
    else:
        for i, cp in enumerate(cps):
            assert post(client, rid, i, cp).status_code == 201
    e = tables.run_events
    with app.state.engine.connect() as conn:
        observed = conn.execute(
            select(e.c.step).where(e.c.run_id == rid, e.c.kind == "observed").order_by(e.c.step)
        ).scalars()
        assert list(observed) == [0, 2, 4]
        c = tables.checkpoints
        steps = select(c.c.step).where(c.c.run_id == rid).order_by(c.c.step)
        assert conn.execute(steps).scalars().all() == [0, 1, 2, 3, 4]
    # Observers run without savepoints until one fails; the call is then done again with
    # them. Posted one by one, the failing observer comes first, so the recorder is called
    # once per checkpoint; in the batch it had seen step 0 before step 1 failed, and that
    # first call was rolled back with the attempt.
    first_attempt = [0] if batch else []
    assert [s for s, _, _, _ in recorder.seen] == [*first_attempt, 0, 1, 2, 3, 4]
    app.state.engine.dispose()


@pytest.mark.parametrize("failing", [False, True])
def test_observers_run_without_savepoints_until_one_fails(tmp_path: Path, failing: bool) -> None:
    """The savepoints that isolate observers are paid for only once an observer fails (they
    cost the served ingest about a tenth of its throughput on PostgreSQL). SQLite: its
    savepoints go through SQLAlchemy, where they can be counted."""
    recorder = Recorder()
    observers: list[Any] = [WritesThenFailsOnOddSteps(), recorder] if failing else [recorder]
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", home=tmp_path, admin_token=ADMIN
        ),
        observers=observers,
        extensions=(),
    )
    sent: list[str] = []
    event.listen(
        app.state.engine, "before_cursor_execute", lambda _c, _cur, sql, *a: sent.append(sql)
    )
    client = TestClient(app, headers=AUTH)
    rid = new_run(client, windows=[3])
    for i, cp in enumerate(random_walk(4, 16)):
        assert post(client, rid, i, cp).status_code == 201
    savepoints = [sql for sql in sent if sql == f"SAVEPOINT {OBSERVER_SAVEPOINT}"]
    assert len(savepoints) == (2 * 2 if failing else 0)  # steps 1 and 3, two observers each
    assert [s for s, _, _, _ in recorder.seen] == [0, 1, 2, 3]
    app.state.engine.dispose()


class Overlap:
    """Counts how many observer calls (so ingests) run at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def on_checkpoint(self, conn: Connection, *args: Any) -> None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.2)
        with self.lock:
            self.inside -= 1

    def on_non_finite(self, conn: Connection, *args: Any) -> None:
        return None


@pytest.mark.parametrize(("concurrency", "most"), [(1, 1), (3, 3)])
def test_ingest_concurrency_bounds_the_ingests_a_process_runs_at_once(
    postgres_url: str, tmp_path: Path, concurrency: int, most: int
) -> None:
    overlap = Overlap()
    settings = Settings(
        database_url=postgres_url,
        home=tmp_path,
        admin_token=ADMIN,
        ingest_concurrency=concurrency,
        pool_size=5,
    )
    app = create_app(settings, observers=[overlap], extensions=())
    with TestClient(app, headers=AUTH) as client:
        runs = [new_run(client) for _ in range(6)]
        walk = random_walk(1, 16, seed=3)[0]

        def one(run_id: int) -> int:
            return post(client, run_id, 10, walk).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(one, runs))
    app.state.engine.dispose()
    assert codes == [201] * 6
    assert overlap.most == most


def test_ingest_concurrency_must_not_be_negative() -> None:
    with pytest.raises(ValidationError, match="ingest_concurrency"):
        Settings(ingest_concurrency=-1)
