"""The shared training loop (events, steps, history, stop, non-finite loss), its handlers and the model-file format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gazerad.engine.checkpoint import MODEL_FORMAT, load_model_file, save_model_file
from gazerad.engine.handlers import CheckpointSaver, RunSummary
from gazerad.engine.loop import Events, TrainLoop
from gazerad.errors import InputError


def _problem(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(5)
    data = [torch.randn(4, 3, generator=g) for _ in range(5)]
    return model, opt, data


def _loop(model: torch.nn.Module, opt: torch.optim.Optimizer, epochs: int, **kw) -> TrainLoop:  # noqa: ANN003
    def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = model(x)[:, 0]
        return {"loss": ((y - x.sum(1)) ** 2).mean(), "mean_out": y.mean()}

    sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    return TrainLoop(step, optimizer=opt, scheduler=sched, max_epochs=epochs, **kw)


def test_events_fire_in_ignite_order_and_history_has_epoch_means() -> None:
    model, opt, data = _problem()
    loop = _loop(model, opt, 2)
    seen: list[tuple[str, int, int]] = []
    for ev in Events:
        loop.on(ev, lambda lp, ev=ev: seen.append((ev.value, lp.state.epoch, lp.state.iteration)))
    losses: list[float] = []
    loop.on(Events.ITERATION_COMPLETED, lambda lp: losses.append(lp.state.output["loss"]))
    state = loop.run(data)
    assert seen[0] == ("started", 0, 0) and seen[-1] == ("completed", 2, 10)
    assert [e for e, *_ in seen[1:4]] == ["epoch_started", "iteration_started", "iteration_completed"]
    assert seen.count(("epoch_completed", 1, 5)) == 1 and seen.count(("epoch_completed", 2, 10)) == 1
    assert [h["epoch"] for h in state.history] == [1, 2] and [h["steps"] for h in state.history] == [5, 10]
    assert state.history[0]["loss"] == pytest.approx(sum(losses[:5]) / 5, rel=1e-6)
    assert state.history[1]["loss"] < state.history[0]["loss"]  # it trains
    assert "mean_out" in state.history[0] and opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_same_steps_as_a_hand_written_loop() -> None:
    model, opt, data = _problem()
    _loop(model, opt, 2).run(data)
    ref, ref_opt, _ = _problem()
    sched = torch.optim.lr_scheduler.StepLR(ref_opt, 3, 0.5)
    for _ in range(2):
        for x in data:
            loss = ((ref(x)[:, 0] - x.sum(1)) ** 2).mean()
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            sched.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_max_steps_and_terminate_stop_the_run() -> None:
    model, opt, data = _problem()
    state = _loop(model, opt, 5, max_steps=7).run(data)
    assert state.iteration == 7 and len(state.history) == 2 and state.history[-1]["steps"] == 7
    model, opt, data = _problem()
    loop = _loop(model, opt, 5)
    loop.on(Events.EPOCH_COMPLETED, lambda lp: setattr(lp.state, "should_terminate", lp.state.epoch == 3))
    assert loop.run(data).epoch == 3


def test_non_finite_loss_raises_before_the_weights_change() -> None:
    model, opt, data = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    loop = TrainLoop(lambda x: {"loss": model(x).sum() * float("nan")}, optimizer=opt, max_epochs=1)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 0"):
        loop.run(data)
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_saver_resume_equals_uninterrupted(tmp_path: Path) -> None:
    model, opt, data = _problem()
    full = _loop(model, opt, 4)
    full.run(data)

    cut_model, cut_opt, _ = _problem()
    cut = _loop(cut_model, cut_opt, 4, max_steps=10)  # "killed" after epoch 2
    saver = CheckpointSaver(tmp_path / "checkpoint.pt", "toy", cut_model, {"n": 3})
    cut.add(saver)
    cut.run(data)

    res_model, res_opt, _ = _problem(seed=9)  # other initial weights: all must come from the file
    resumed = _loop(res_model, res_opt, 4)
    saver = CheckpointSaver(tmp_path / "checkpoint.pt", "toy", res_model, {"n": 3})
    assert saver.resume(resumed, "cpu") == {}
    assert resumed.state.epoch == 2 and resumed.state.iteration == 10
    state = resumed.run(data)
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4]
    for a, b in zip(model.parameters(), res_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    other = CheckpointSaver(tmp_path / "checkpoint.pt", "toy", res_model, {"n": 4})
    with pytest.raises(InputError, match="another run.*n 3 there, 4 here.*use another --out"):
        other.resume(_loop(*_problem()[:2], 4), "cpu")


def test_run_summary_writes_history_and_curve(tmp_path: Path) -> None:
    model, opt, data = _problem()
    loop = _loop(model, opt, 2)
    loop.add(RunSummary(tmp_path, {"lr": 0.1}, {"precision": "fp32"}, "toy"))
    loop.run(data)
    import json

    h = json.loads((tmp_path / "history.json").read_text())
    assert h["config"] == {"lr": 0.1} and len(h["history"]) == 2
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_file_kind_checked_and_legacy_files_load(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)

    def build(state: dict) -> torch.nn.Module:
        m = torch.nn.Linear(*state["config"]["shape"])
        m.load_state_dict(state["weights"])
        return m

    p = save_model_file(tmp_path / "encoder.pt", "encoder", {"shape": [2, 2]}, weights=net.state_dict())
    state = torch.load(p, weights_only=True)
    assert state["format"] == MODEL_FORMAT and state["kind"] == "encoder"
    loaded, _ = load_model_file(tmp_path, "encoder", build)  # the folder holding encoder.pt
    torch.testing.assert_close(loaded.weight, net.weight)
    assert not loaded.training
    with pytest.raises(InputError, match="encoder.pt.*not a GazeRad KACL model"):
        load_model_file(p, "kacl", build)
    torch.save({"config": {"shape": [2, 2]}, "weights": net.state_dict()}, tmp_path / "old.pt")  # before the format tag
    load_model_file(tmp_path / "old.pt", "encoder", build)
    torch.save({"format": MODEL_FORMAT, "version": 99, "kind": "encoder", "config": {}}, tmp_path / "new.pt")
    with pytest.raises(InputError, match="newer than this GazeRad"):
        load_model_file(tmp_path / "new.pt", "encoder", build)
    torch.save({"config": {"shape": [3, 2]}, "weights": net.state_dict()}, tmp_path / "misfit.pt")
    with pytest.raises(InputError, match="misfit.pt.*do not match"):
        load_model_file(tmp_path / "misfit.pt", "encoder", build)
    with pytest.raises(InputError, match="encoder model not found.*run it"):
        load_model_file(tmp_path / "none.pt", "encoder", build, hint="run it")
