"""With no database URL the server uses $SEDMON_HOME/sedmon.db (SQLite, WAL) and works fully."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servertest import ADMIN, AUTH, new_run, post, post_json, random_walk, snapshot
from sqlalchemy import text

from sedmon_core.spectrum import spectrum_series
from sedmon_server.app import create_app
from sedmon_server.settings import Settings


def test_default_database_is_a_wal_sqlite_file_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEDMON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEDMON_DATABASE_URL", raising=False)
    app = create_app(Settings(admin_token=ADMIN), extensions=())
    assert (tmp_path / "home" / "sedmon.db").is_file()
    with app.state.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    app.state.engine.dispose()


def test_sqlite_ingest_equals_the_batch_computation_and_refuses_bad_input(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, admin_token=ADMIN), extensions=())
    client = TestClient(app, headers=AUTH)
    rid = new_run(client, windows=[4])
    cps = random_walk(12, 16, seed=2)
    for i, cp in enumerate(cps):
        assert post(client, rid, i, cp, {"loss": float(i)}).status_code == 201
    before = snapshot(app.state.engine, rid)
    assert post(client, rid, 11, cps[11], {"loss": 11.0}).status_code == 200
    assert post(client, rid, 11, cps[10]).status_code == 409
    assert post(client, rid, 5, cps[10]).status_code == 409
    nan = list(cps[0]["all"])
    nan[0] = float("nan")
    assert (
        post_json(
            client, f"/api/v1/runs/{rid}/checkpoints", {"step": 20, "sketch": {"all": nan}}
        ).status_code
        == 422
    )
    assert post(client, rid, 2**63, cps[0]).status_code == 422
    assert post(client, rid, 20, cps[0], {"m" * 201: 1.0}).status_code == 422
    assert post(client, rid, 20, {"all": [1e200] * 16}).status_code == 422
    assert post(client, 10**20, 20, cps[0]).status_code == 404
    assert snapshot(app.state.engine, rid) == before  # bad input changed nothing
    pos = np.array([cp["all"] for cp in cps])
    d = np.diff(pos, axis=0)
    expected = spectrum_series(d @ d.T, 4)
    points = client.get(f"/api/v1/runs/{rid}/spectrum", params={"window": 4}).json()["points"]
    assert len(points) == len(expected)
    for p, e in zip(points, expected, strict=True):
        np.testing.assert_allclose(p["sigma"], e.sigma, rtol=1e-9)
    app.state.engine.dispose()
