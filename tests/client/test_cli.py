"""`sedmon analyze` on folders of real checkpoints from a tiny model trained here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sedmon import sketch_parameters
from sedmon._spool import Spool
from sedmon.cli import main
from sedmon_core.schemas import SpectrumOut, SpectrumPoint
from sedmon_core.spectrum import gram_of_deltas, spectrum_series

STEPS = 14
WINDOWS = (3, 5)


class TinyGPT(torch.nn.Module):
    """Names like nanoGPT's: a tied head, a causal-mask buffer, blocks under transformer.h."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = torch.nn.ModuleDict(
            {
                "wte": torch.nn.Embedding(11, 8),
                "h": torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)]),
                "ln_f": torch.nn.LayerNorm(8),
            }
        )
        self.lm_head = torch.nn.Linear(8, 11, bias=False)
        self.lm_head.weight = self.transformer["wte"].weight
        self.attn = torch.nn.Module()
        self.attn.register_buffer("bias", torch.ones(1, 1, 4, 4))  # nanoGPT's causal mask

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.transformer["wte"](idx)
        for layer in self.transformer["h"]:
            x = x + torch.tanh(layer(x))
        out: torch.Tensor = self.lm_head(self.transformer["ln_f"](x))
        return out


def _train(folder: Path, save: Any, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Train TinyGPT, save a checkpoint per step with `save(folder, step, state_dict)`.

    Returns the learned tensors of each checkpoint, normalised by hand: no mask, the tied
    weight once (under its embedding name), as float64 copies.
    """
    torch.manual_seed(0)
    model = TinyGPT()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    idx = torch.randint(0, 11, (16, 6))
    learned = []
    for step in range(steps):
        if step:
            opt.zero_grad()
            logits = model(idx[:, :-1])
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, 11), idx[:, 1:].reshape(-1)
            ).backward()
            opt.step()
        model.attn.bias.fill_(float(step))  # a buffer that moves must still not count
        state = model.state_dict()
        save(folder, step, state)
        skip = ("attn.bias", "lm_head.weight")
        learned.append({k: v.detach().double().clone() for k, v in state.items() if k not in skip})
    return learned


def _save_nested(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
    torch.save(
        {"model": state, "step": step, "metrics": {"loss": 1.0}}, folder / f"ckpt-{step:04d}.pt"
    )


def _expected(learned: list[dict[str, torch.Tensor]], window: int) -> list[dict[str, Any]]:
    flat = [torch.cat([c[k].reshape(-1) for k in sorted(c)]).numpy() for c in learned]
    deltas = np.diff(np.stack(flat), axis=0)
    series = spectrum_series(gram_of_deltas(deltas), window)
    return [{"step": i + window, **ws.as_dict()} for i, ws in enumerate(series)]


def _analyze(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["analyze", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _close(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [p["step"] for p in actual] == [p["step"] for p in expected]
    for a, e in zip(actual, expected, strict=True):
        assert a["signal_rank"] == e["signal_rank"] and a["k95"] == e["k95"]
        for key in (
            "sigma",
            "ratios",
            "gap_ratio",
            "total_variance",
            "effective_rank",
            "drift_speed",
        ):
            np.testing.assert_allclose(a[key], e[key], rtol=1e-9, atol=0)


def test_exact_analysis_agrees_with_sedmon_core_on_the_exact_deltas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learned = _train(tmp_path, _save_nested)
    out = _analyze(capsys, str(tmp_path), "--windows", "3,5")
    assert [o["window"] for o in out] == list(WINDOWS)
    for o in out:
        _close(o["points"], _expected(learned, o["window"]))


def test_json_has_exactly_the_rest_spectrum_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(tmp_path, _save_nested, steps=6)
    out = _analyze(capsys, str(tmp_path), "--windows", "3")
    assert isinstance(out, dict)
    assert set(out) == set(SpectrumOut.model_fields) - {"run_id"}
    assert all(set(p) == set(SpectrumPoint.model_fields) for p in out["points"])
    SpectrumOut.model_validate({**out, "run_id": 0})
    assert (out["window"], out["group"], out["rank_rule"]) == (3, "all", "half")


def test_sketched_analysis_equals_the_spectrum_of_the_sketches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    states: list[dict[str, torch.Tensor]] = []

    def keep(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        states.append(copy.deepcopy(state))  # keeps the tied head tied
        _save_nested(folder, step, state)

    _train(tmp_path, keep, steps=8)
    out = _analyze(capsys, str(tmp_path), "--windows", "4", "--dim", "64", "--seed", "3")
    sketches = np.stack([sketch_parameters(s, dim=64, seed=3)["all"] for s in states])
    series = spectrum_series(gram_of_deltas(np.diff(sketches, axis=0)), 4, noise_dim=64)
    expected = [{"step": i + 4, **ws.as_dict()} for i, ws in enumerate(series)]
    _close(out["points"], expected)


def test_steps_come_from_the_file_before_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def save(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        # names sort against the steps: z-0, y-1, ...; "iteration" holds the truth
        torch.save(
            {"state_dict": state, "iteration": step}, folder / f"{chr(122 - step)}-{9 - step}.pt"
        )

    learned = _train(tmp_path, save, steps=6)
    out = _analyze(capsys, str(tmp_path), "--windows", "3")
    _close(out["points"], _expected(learned, 3))


def test_steps_fall_back_to_the_last_number_of_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def save(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        torch.save(
            state, folder / f"run7_step{step * 10}.pth"
        )  # 0, 10, ..., 50: not sorted as text

    learned = _train(tmp_path, save, steps=6)
    out = _analyze(capsys, str(tmp_path), "--windows", "3")
    assert [p["step"] for p in out["points"]] == [30, 40, 50]
    np.testing.assert_allclose(
        [p["gap_ratio"] for p in out["points"]],
        [p["gap_ratio"] for p in _expected(learned, 3)],
        rtol=1e-9,
    )


def test_safetensors_checkpoints_are_read_with_their_step_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    def save(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"}
        save_file(tensors, str(folder / f"model-{step}.safetensors"), metadata={"step": str(step)})

    learned = _train(tmp_path, save, steps=6)
    out = _analyze(capsys, str(tmp_path), "--windows", "3")
    _close(out["points"], _expected(learned, 3))


def test_files_that_are_not_checkpoints_are_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learned = _train(tmp_path, _save_nested, steps=6)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "broken.pt").write_bytes(b"\x00garbage")
    torch.save({"step": 99, "lr": 0.1}, tmp_path / "optimizer-99.pt")
    assert main(["analyze", str(tmp_path), "--windows", "3", "--json"]) == 0
    captured = capsys.readouterr()
    for name in ("notes.txt", "broken.pt", "optimizer-99.pt"):
        assert f"skipping {name}" in captured.err
    _close(json.loads(captured.out)["points"], _expected(learned, 3))


def test_a_key_that_disappears_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def save(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        if step == 3:
            state = {k: v for k, v in state.items() if k != "transformer.ln_f.bias"}
        _save_nested(folder, step, state)

    _train(tmp_path, save, steps=5)
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ckpt-0003.pt" in err and "'transformer.ln_f.bias' is missing" in err


def test_a_shape_change_is_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def save(folder: Path, step: int, state: dict[str, torch.Tensor]) -> None:
        if step == 2:
            state = {**state, "transformer.h.0.bias": torch.zeros(9)}
        _save_nested(folder, step, state)

    _train(tmp_path, save, steps=4)
    assert main(["analyze", str(tmp_path)]) == 2
    assert "'transformer.h.0.bias' changed shape from [8] to [9]" in capsys.readouterr().err


def test_the_table_shows_the_edge_per_window_and_the_plot_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    learned = _train(folder, _save_nested, steps=8)
    png = tmp_path / "edge.png"
    assert main(["analyze", str(folder), "--windows", "3,5", "--plot", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in lines if line.split()[:1] == ["3"])
    last = _expected(learned, 3)[-1]
    assert int(row[2]) == last["step"] and int(row[3]) == last["signal_rank"]
    assert float(row[4]) == pytest.approx(last["gap_ratio"], abs=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_layers_group_analyses_only_its_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    learned = _train(tmp_path, _save_nested, steps=6)
    out = _analyze(capsys, str(tmp_path), "--windows", "3", "--group", "norms")
    norms = [{k: v for k, v in c.items() if k.startswith("transformer.ln_f")} for c in learned]
    assert out["group"] == "norms"
    _close(out["points"], _expected(norms, 3))


def test_sync_with_an_empty_spool_has_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync", "--spool-dir", str(tmp_path)]) == 0
    assert "nothing to sync" in capsys.readouterr().out


def _spool_one(root: Path, project: str) -> Spool:
    spec = {"project": project, "name": "r", "sketch": {"method": "countsketch", "dim": 2}}
    spool = Spool.create(root, "http://127.0.0.1:9", spec)
    spool.append(1, "metrics_batch", {"points": [{"step": 1, "values": {"loss": 1.0}}]})
    spool.close()
    return spool


def test_sync_without_a_token_says_to_set_sedmon_token_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEDMON_TOKEN", raising=False)
    spool = _spool_one(tmp_path, "lm")
    files = sorted((p.name, p.read_bytes()) for p in spool.directory.iterdir())
    assert main(["sync", "--spool-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "set SEDMON_TOKEN to an ingest token of project lm" in err
    assert "1 run(s) waiting" in err
    assert sorted((p.name, p.read_bytes()) for p in spool.directory.iterdir()) == files


def test_the_spool_holds_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sedmon

    secret = "sm_" + "s3cr3t" * 6
    run = sedmon.init(
        project="lm", name="r", server="http://127.0.0.1:9", token=secret, spool_dir=tmp_path
    )
    run.log({"loss": 1.0}, step=1)
    run.finish(timeout=0.2)
    (folder,) = Spool.folders(tmp_path)
    assert all(secret.encode() not in p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_sync_of_one_project_leaves_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEDMON_TOKEN", raising=False)
    _spool_one(tmp_path, "lm")
    assert main(["sync", "--spool-dir", str(tmp_path), "--project", "vision"]) == 0
    assert "nothing to sync" in capsys.readouterr().out
    assert len(Spool.folders(tmp_path)) == 1
