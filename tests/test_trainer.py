import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from puhui.progress import Progress
from puhui.train import TrainConfig, fit, load_checkpoint, lr_factor

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and two spinning threads on a loaded machine are 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blobs(n: int, seed: int, dim: int = 10, flip: bool = False) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, dim, generator=g) + (y[:, None] * 2 - 1) * 1.5
    return TensorDataset(x, 1 - y if flip else y)


def mlp(dim: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 2))


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def accuracy(model, loader):
    right = total = 0
    for x, y in loader:
        right += (model(x).argmax(-1) == y).sum().item()
        total += len(y)
    return {"accuracy": right / total}


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_learns_and_writes_run_folder(tmp_path):
    events = []
    model = mlp()
    cfg = TrainConfig(epochs=6, batch_size=32, lr=1e-2, optimizer="adam", out_dir=str(tmp_path / "run"),
                      monitor="val_accuracy", monitor_mode="max")
    res = fit(model, ce, blobs(512, 0), cfg, val_data=blobs(256, 1), evaluate=accuracy,
              progress=events.append)
    lines = [e.task for e in events if e.message]
    h = res.history
    assert len(h) == 6 and h[-1]["train_loss"] < 0.5 * h[0]["train_loss"]
    assert h[-1]["val_accuracy"] > 0.95 and res.best >= h[-1]["val_accuracy"]
    assert res.monitor == "val_accuracy" and 1 <= res.best_epoch <= 6 and not res.stopped_early
    assert set(h[0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "samples_per_s", "time_s"}
    assert lines[0].startswith("Epoch 1: Loss = ") and "val_accuracy = " in lines[0]
    assert all(isinstance(e, Progress) for e in events) and sum(e.finished for e in events) == 6
    assert {"loss", "samples/s"} <= set(events[0].info)
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "best.safetensors", "last.safetensors", "metrics.json", "loss_curve.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp"))
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((run / "metrics.json").read_text())
    assert m["history"] == h and m["best"] == res.best and m["monitor"] == "val_accuracy"
    assert m["steps"][-1][0] == res.global_step == 6 * 16
    last = load_file(str(run / "last.safetensors"))
    assert all(torch.equal(last[k], v) for k, v in model.state_dict().items())
    assert set(res.paths) == {"checkpoint", "best", "last", "metrics", "plot"}


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_optimizers_and_schedules_run(optimizer, schedule):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, optimizer=optimizer, momentum=0.9, weight_decay=1e-4,
                      schedule=schedule, warmup_steps=3)
    res = fit(mlp(), ce, blobs(128, 0), cfg)
    assert res.global_step == 16 and res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    lrs = [s[2] for s in res.steps]
    assert lrs[:3] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05])  # warm-up: lr * (s + 1) / warmup_steps
    if schedule == "constant":
        assert lrs[3:] == pytest.approx([0.05] * 13)
    else:
        assert lrs[3] == pytest.approx(0.05) and all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.05 / 10


def test_lr_factor_values():
    kw = dict(warmup_steps=4, total_steps=14)
    assert [lr_factor(s, schedule="linear", **kw) for s in (0, 1, 3, 4, 9, 14)] == pytest.approx(
        [0.25, 0.5, 1.0, 1.0, 0.5, 0.0])
    assert [lr_factor(s, schedule="cosine", **kw) for s in (0, 3, 4, 9, 14)] == pytest.approx(
        [0.25, 1.0, 1.0, 0.5, 0.0])
    assert lr_factor(100, schedule="constant", **kw) == 1.0


def test_grad_accumulation_equals_big_batch():
    data = blobs(64, 3)
    results = []
    for bsz, accum in ((8, 4), (32, 1)):
        model = mlp(seed=1)
        fit(model, ce, data, TrainConfig(epochs=1, batch_size=bsz, grad_accum=accum, optimizer="sgd", lr=0.5,
                                         shuffle=False))
        results.append(weights(model))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6, rtol=0), k
    # a short last group (5 batches of 8 with accum 2 -> groups 2, 2, 1) is averaged over its own size
    model = mlp(seed=1)
    res = fit(model, ce, blobs(40, 3), TrainConfig(epochs=1, batch_size=8, grad_accum=2, optimizer="sgd"))
    assert res.global_step == 3


def test_clip_grad_norm_limits_the_update():
    data = blobs(32, 0)
    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(10, 2))
    with torch.no_grad():
        big[0].weight.mul_(50)  # huge logits, huge gradients
    deltas = {}
    for clip in (None, 0.1):
        model = nn.Sequential(nn.Linear(10, 2))
        model.load_state_dict(big.state_dict())
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        fit(model, ce, data, TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=1.0, clip_grad_norm=clip))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        deltas[clip] = (after - before).norm().item()  # SGD, lr 1: the update is the (clipped) gradient
    assert deltas[None] > 1.0 and deltas[0.1] == pytest.approx(0.1, rel=1e-4)


def test_bf16_autocast_on_cpu():
    res = fit(mlp(), ce, blobs(128, 0), TrainConfig(epochs=3, batch_size=16, lr=1e-2, amp="bf16"),
              val_data=blobs(64, 1), evaluate=accuracy)
    h = res.history
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in h)
    assert h[-1]["train_loss"] < h[0]["train_loss"] and h[-1]["val_accuracy"] > 0.9


def test_early_stopping_keeps_best_weights(tmp_path):
    # validation labels are the training labels flipped: val_loss is best after epoch 1, then only grows
    train, val = blobs(256, 0), blobs(128, 1, flip=True)
    cfg = TrainConfig(epochs=20, batch_size=32, lr=1e-2, optimizer="adam", early_stopping_patience=2,
                      out_dir=str(tmp_path / "run"))
    model = mlp()
    res = fit(model, ce, train, cfg, val_data=val)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1
    assert res.best == res.history[0]["val_loss"] < min(r["val_loss"] for r in res.history[1:])
    one_epoch = mlp()  # the same run stopped after epoch 1
    fit(one_epoch, ce, train, TrainConfig(epochs=1, batch_size=32, lr=1e-2, optimizer="adam"), val_data=val)
    best = load_file(str(tmp_path / "run" / "best.safetensors"))
    for k, v in one_epoch.state_dict().items():
        assert torch.equal(best[k], v) and torch.equal(model.state_dict()[k], v), k  # and the model holds best
    last = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert not torch.equal(last["0.weight"], best["0.weight"])
    # resuming a run that already stopped does nothing more
    again = mlp()
    res2 = fit(again, ce, train, TrainConfig(**{**cfg.__dict__, "resume": True}), val_data=val)
    assert res2.history == res.history and res2.stopped_early


def test_checkpoint_loads_with_weights_only(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adam", out_dir=str(tmp_path), checkpoint_every=2)
    fit(mlp(), ce, blobs(64, 0), cfg, val_data=blobs(32, 1))
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(ck) >= {"model", "optimizer", "scheduler", "scaler", "rng", "run", "config"}
    assert set(ck["rng"]) == {"torch", "cuda", "numpy", "python", "loader"}
    assert ck["run"]["epoch"] == 1 and ck["run"]["step_in_epoch"] == 0 and ck["run"]["global_step"] == 4
    assert load_checkpoint(tmp_path / "checkpoint.pt")["run"]["history"] == ck["run"]["history"]


class Crash(Exception):
    pass


def test_resume_after_crash_in_process_is_exact(tmp_path):
    """Fast in-process version of the kill test: a crash mid-epoch, then resume, with dropout and accumulation."""
    def run(out_dir, crash_at=None, resume=False):
        calls = [0]

        def loss_fn(model, batch):
            if model.training:
                calls[0] += 1
                if calls[0] == crash_at:
                    raise Crash
            x, y = batch
            return F.cross_entropy(model(x + 0.1 * torch.randn_like(x)), y)

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        cfg = TrainConfig(epochs=3, batch_size=10, grad_accum=2, lr=1e-2, schedule="cosine", warmup_steps=2,
                          checkpoint_every=2, out_dir=str(out_dir), resume=resume)
        return model, fit(model, loss_fn, blobs(95, 0), cfg, val_data=blobs(30, 1))

    ref, ref_res = run(tmp_path / "ref")
    with pytest.raises(Crash):
        run(tmp_path / "cut", crash_at=16)  # epoch 2, batch 6 of 10: mid-group
    ck = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["run"]
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 2, 6)
    resumed, res = run(tmp_path / "cut", resume=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    strip = [{k: v for k, v in h.items() if k not in ("time_s", "samples_per_s")} for h in ref_res.history]
    assert [{k: v for k, v in h.items() if k not in ("time_s", "samples_per_s")} for h in res.history] == strip
    assert res.steps == ref_res.steps


def _script(out_dir: Path, *args: str, **env: str) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
         "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(HERE / "trainer_resume_script.py"), str(out_dir), *args], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _batches(out_dir: Path) -> int:
    try:
        return int((out_dir / "batches.txt").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    ref_dir, paused_dir, timed_dir = tmp_path / "ref", tmp_path / "paused", tmp_path / "timed"
    procs = {1: _script(paused_dir, PAUSE_AT_BATCH="22"),  # epoch 2, batch 9 of 13; last checkpoint at step 9
             2: _script(timed_dir, STEP_SLEEP="0.02")}

    # paused: killed at a known point, two optimizer steps after its last checkpoint (step 9).
    # timed: killed whenever batch 35 (epoch 3) is seen, possibly in the middle of a checkpoint write.
    kill_when = {1: lambda: (paused_dir / "paused").exists(), 2: lambda: _batches(timed_dir) >= 35}
    t0 = time.monotonic()
    try:
        while kill_when:
            for i, cond in list(kill_when.items()):
                assert procs[i].poll() is None, procs[i].communicate()[0].decode()
                if cond():
                    procs[i].send_signal(signal.SIGKILL)
                    del kill_when[i]
            assert time.monotonic() - t0 < 60, "the runs did not get there in time"
            time.sleep(0.002)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for p in procs.values():
        assert p.wait() == -signal.SIGKILL
    ck = torch.load(paused_dir / "checkpoint.pt", weights_only=True)
    assert (ck["run"]["epoch"], ck["run"]["step_in_epoch"], ck["run"]["global_step"]) == (1, 4, 9)
    ck = torch.load(timed_dir / "checkpoint.pt", weights_only=True)  # never partial
    assert ck["run"]["epoch"] == 2 and not (timed_dir / "final.safetensors").exists()

    # the same script run again, here, with resume; and once uninterrupted
    sys.path.insert(0, str(HERE))
    try:
        from trainer_resume_script import main
    finally:
        sys.path.remove(str(HERE))
    ref = main(ref_dir).state_dict()
    for d in (paused_dir, timed_dir):
        got = main(d, resume=True).state_dict()
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), (d.name, k)
        assert json.loads((d / "metrics.json").read_text())["steps"] == \
            json.loads((ref_dir / "metrics.json").read_text())["steps"]
