"""The one training loop for every model puhui trains: an nn.Module, a loss function, datasets, a run folder.

The model is anything; a batch is whatever the dataset (and collate_fn) yields; `loss_fn(model, batch)` turns
it into a scalar. The run folder (cfg.out_dir) holds checkpoint.pt, best.safetensors, last.safetensors,
metrics.json and loss_curve.png, all written atomically. A run killed at any moment and restarted with
resume=True ends with the same weights, bit for bit, as one that was never interrupted: the checkpoint holds
every RNG state and the shuffling generator's state at the start of the epoch, and resuming replays the same
order from the first batch not yet done.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import BadInput, Unsupported
from ..progress import Progress, ProgressFn, say
from .checkpoint import (load_checkpoint, load_weights, rng_state, save_checkpoint, save_json, save_weights,
                         set_rng_state)
from .plot import plot_loss_curve

LossFn = Callable[[nn.Module, Any], torch.Tensor]           # (model, batch) -> scalar loss, a mean over the batch
EvalFn = Callable[[nn.Module, Any], "dict[str, float]"]     # (model, validation batches on device) -> metrics
PLOT_EVERY_S = 10.0  # loss_curve.png is redrawn at an epoch end when it is older than this, and at the last epoch
FILES = {"checkpoint": "checkpoint.pt", "best": "best.safetensors", "last": "last.safetensors",
         "metrics": "metrics.json", "plot": "loss_curve.png"}


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"            # "sgd" | "adam" | "adamw"
    momentum: float = 0.0               # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"          # "constant" | "linear" | "cosine" (both decay towards 0 at the last step)
    warmup_steps: int = 0               # optimizer step s < warmup_steps uses lr * (s + 1) / warmup_steps
    grad_accum: int = 1                 # micro-batches per optimizer step
    clip_grad_norm: Optional[float] = None
    amp: Optional[str] = None           # "bf16" (autocast, CPU and CUDA) | "fp16" (autocast + GradScaler) | None
    device: str = "cpu"
    seed: int = 0
    shuffle: bool = True
    checkpoint_every: int = 0           # optimizer steps between checkpoints; 0 = only at epoch ends
    out_dir: Optional[str] = None       # the run folder; None writes nothing (and cannot resume)
    resume: bool = False                # continue from out_dir/checkpoint.pt when it is there
    early_stopping_patience: Optional[int] = None  # epochs without improvement of `monitor` before stopping
    monitor: str = "val_loss"           # "train_loss", "val_loss" or any "val_<metric>" from evaluate
    monitor_mode: str = "min"           # "min" | "max"
    num_workers: int = 0


@dataclass
class TrainResult:
    history: list[dict]                 # one record per epoch: epoch, train_loss, val_*, lr, samples_per_s, time_s
    steps: list[list[float]]            # [optimizer step, train loss, lr], at most ~500 rows
    monitor: str
    best: Optional[float]
    best_epoch: Optional[int]
    stopped_early: bool
    global_step: int
    paths: dict[str, Path] = field(default_factory=dict)  # checkpoint, best, last, metrics, plot


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise Unsupported(f"unknown lr schedule {schedule!r}; use constant, linear or cosine")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise Unsupported(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or adamw")


def to_device(batch, device):
    """Move every tensor in a batch (tensors, dicts, lists, tuples, namedtuples) to device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


class OnDevice:
    """A loader whose batches arrive on device; what `evaluate` is given."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (to_device(b, self.device) for b in self.loader)


def _check(cfg: TrainConfig) -> None:
    lr_factor(0, schedule=cfg.schedule, warmup_steps=0, total_steps=1)
    if cfg.optimizer not in ("sgd", "adam", "adamw"):
        raise Unsupported(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or adamw")
    if cfg.amp not in (None, "bf16", "fp16"):
        raise Unsupported(f"amp must be 'bf16', 'fp16' or None, not {cfg.amp!r}")
    if cfg.monitor_mode not in ("min", "max"):
        raise BadInput(f"monitor_mode must be 'min' or 'max', not {cfg.monitor_mode!r}")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.epochs < 0 or cfg.warmup_steps < 0:
        raise BadInput("batch_size and grad_accum must be >= 1, epochs and warmup_steps >= 0")
    if cfg.resume and not cfg.out_dir:
        raise BadInput("resume needs out_dir, the run folder that holds checkpoint.pt")


def fit(model: nn.Module, loss_fn: LossFn, train_data: Dataset, cfg: Optional[TrainConfig] = None, *,
        val_data: Optional[Dataset] = None, evaluate: Optional[EvalFn] = None,
        collate_fn: Optional[Callable] = None, progress: Optional[ProgressFn] = None) -> TrainResult:
    """Train model in place; return the history, the best value of cfg.monitor and the run folder's files.

    With early stopping on, the model ends with the best epoch's weights; otherwise with the last ones. Each
    epoch ends with a finished bar and the message "Epoch N: Loss = ..." through `progress`.
    """
    cfg = cfg or TrainConfig()
    _check(cfg)
    dev = torch.device(cfg.device)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    paths = {k: out / name for k, name in FILES.items()} if out else {}
    if out:
        out.mkdir(parents=True, exist_ok=True)
    monitor = cfg.monitor
    if val_data is None and monitor.startswith("val_"):
        if monitor != "val_loss":
            raise BadInput(f"monitor {monitor!r} needs validation data")
        monitor = "train_loss"

    seed_everything(cfg.seed)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    n, bsz, accum = len(train_data), cfg.batch_size, cfg.grad_accum
    if n == 0:
        raise BadInput("the training dataset is empty")
    n_batches = math.ceil(n / bsz)
    total_steps = cfg.epochs * math.ceil(n_batches / accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
        s, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=total_steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.amp == "fp16")
    amp_dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16

    def amp():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=cfg.amp is not None)

    gen = torch.Generator().manual_seed(cfg.seed)  # the shuffling order; its state goes into the checkpoint
    record_every = max(1, total_steps // 500)
    config = asdict(cfg)
    run = dict(epoch=0, step_in_epoch=0, global_step=0, loss_sum=0.0, time=0.0, history=[], steps=[],
               best=None, best_epoch=None, bad_epochs=0, stopped=False)

    if cfg.resume and paths["checkpoint"].exists():
        ck = load_checkpoint(paths["checkpoint"])
        for key in ("batch_size", "grad_accum", "seed", "shuffle"):
            if ck["config"][key] != config[key]:
                raise BadInput(f"cannot resume: the checkpoint has {key}={ck['config'][key]}, the config {config[key]}")
        if ck["n_train"] != n:
            raise BadInput(f"cannot resume: the checkpoint saw {ck['n_train']} training examples, now {n}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        run = ck["run"]
        set_rng_state(ck["rng"], gen)

    def save(loader_state: torch.Tensor) -> None:
        rng = rng_state(gen)
        rng["loader"] = loader_state
        save_checkpoint(paths["checkpoint"], {
            "format": 1, "config": config, "n_train": n, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "run": run, "rng": rng})

    best_state = None  # in memory only when there is no run folder
    t_plot = time.perf_counter()
    lr = opt.param_groups[0]["lr"]
    model.train()
    while run["epoch"] < cfg.epochs and not run["stopped"]:
        epoch, start = run["epoch"], run["step_in_epoch"]
        epoch_gen_state = gen.get_state()
        order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
        loader = DataLoader(train_data, batch_size=bsz, sampler=order[start * bsz:].tolist(),
                            num_workers=cfg.num_workers, collate_fn=collate_fn, pin_memory=dev.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed + epoch))  # workers' base seed
        task = f"epoch {epoch + 1}/{cfg.epochs}"
        t0, t_report, session_t0 = time.perf_counter() - run["time"], 0.0, time.perf_counter()
        loss_sum = torch.tensor(run["loss_sum"], dtype=torch.float64, device=dev)  # sum of loss * batch size
        group_loss = torch.zeros((), dtype=torch.float64, device=dev)

        for i, batch in enumerate(loader, start=start):
            group_start = i - i % accum
            group_size = min(accum, n_batches - group_start)  # the last group of an epoch may be short
            with amp():
                loss = loss_fn(model, to_device(batch, dev))
            scaler.scale(loss / group_size).backward()
            loss_sum += loss.detach().double() * min(bsz, n - i * bsz)
            group_loss += loss.detach().double() / group_size
            if i + 1 < group_start + group_size:
                continue
            if cfg.clip_grad_norm is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            lr = opt.param_groups[0]["lr"]
            scaler.step(opt)
            scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
            run["global_step"] += 1
            run["step_in_epoch"] = i + 1
            if run["global_step"] % record_every == 0 or run["global_step"] == total_steps:
                run["steps"].append([run["global_step"], group_loss.item(), lr])
            group_loss.zero_()
            now = time.perf_counter()
            if progress is not None and (now - t_report > 0.1 or i + 1 == n_batches):
                t_report = now
                done = min(n, (i + 1) * bsz)
                progress(Progress(task, i + 1, n_batches, info={
                    "loss": loss_sum.item() / done, "samples/s": (done - start * bsz) / max(now - session_t0, 1e-9),
                    "lr": lr}))
            if out and cfg.checkpoint_every and run["global_step"] % cfg.checkpoint_every == 0 and i + 1 < n_batches:
                run["loss_sum"], run["time"] = loss_sum.item(), now - t0
                save(epoch_gen_state)

        elapsed = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": loss_sum.item() / n}
        if val_data is not None:
            record.update(_validate(model, loss_fn, val_data, bsz, dev, amp, evaluate, collate_fn))
        record.update(lr=lr, samples_per_s=n / max(elapsed, 1e-9), time_s=elapsed, global_step=run["global_step"])
        if monitor not in record:
            raise BadInput(f"monitor {monitor!r} is not among the epoch's metrics {sorted(record)}")
        value = record[monitor]
        if run["best"] is None or (value < run["best"] if cfg.monitor_mode == "min" else value > run["best"]):
            run.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
            if out:
                save_weights(paths["best"], model.state_dict())
            elif cfg.early_stopping_patience is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            run["bad_epochs"] += 1
        run["history"].append(record)
        run["stopped"] = cfg.early_stopping_patience is not None and run["bad_epochs"] >= cfg.early_stopping_patience
        run.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, time=0.0)
        if out:  # the checkpoint last: a run killed before it redoes this epoch and rewrites the same files
            save_weights(paths["last"], model.state_dict())
            _write_metrics(paths, run, monitor, cfg, config)
            if run["epoch"] == cfg.epochs or run["stopped"] or time.perf_counter() - t_plot > PLOT_EVERY_S:
                plot_loss_curve(paths["plot"], run["history"], run["steps"])
                t_plot = time.perf_counter()
            save(gen.get_state())  # the next epoch starts from here
        if progress is not None:
            progress(Progress(task, n_batches, n_batches, finished=True, info={
                "loss": record["train_loss"], "samples/s": record["samples_per_s"],
                **{k: v for k, v in record.items() if k.startswith("val_")}}))
        say(progress, f"Epoch {epoch + 1}: Loss = {record['train_loss']:.4f}"
            + "".join(f", {k} = {v:.4f}" for k, v in record.items() if k.startswith("val_")))

    if cfg.early_stopping_patience is not None and run["best_epoch"] not in (None, len(run["history"])):
        model.load_state_dict(best_state if best_state is not None else load_weights(paths["best"], dev))
    return TrainResult(history=run["history"], steps=run["steps"], monitor=monitor, best=run["best"],
                       best_epoch=run["best_epoch"], stopped_early=run["stopped"], global_step=run["global_step"],
                       paths={k: p for k, p in paths.items() if p.exists()})


@torch.no_grad()
def _validate(model: nn.Module, loss_fn: LossFn, data: Dataset, batch_size: int, device: torch.device,
             amp: Callable, evaluate: Optional[EvalFn] = None, collate_fn: Optional[Callable] = None) -> dict:
    """val_loss (mean over examples) plus evaluate's metrics, each named val_<name>."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    n = len(data)
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        with amp():
            for i, batch in enumerate(loader):
                loss_sum += loss_fn(model, to_device(batch, device)).double() * min(batch_size, n - i * batch_size)
            metrics = {"val_loss": loss_sum.item() / max(n, 1)}
            if evaluate is not None:
                for k, v in evaluate(model, OnDevice(loader, device)).items():
                    metrics[k if k.startswith("val_") else f"val_{k}"] = float(v)
    finally:
        model.train()
    return metrics


def _write_metrics(paths: dict, run: dict, monitor: str, cfg: TrainConfig, config: dict) -> None:
    save_json(paths["metrics"], {"monitor": monitor, "mode": cfg.monitor_mode, "best": run["best"],
                                 "best_epoch": run["best_epoch"], "stopped_early": run["stopped"],
                                 "global_step": run["global_step"], "history": run["history"],
                                 "steps": run["steps"], "config": config})
