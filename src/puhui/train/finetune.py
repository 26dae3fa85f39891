"""`puhui finetune BASE --data FILE --name NAME`: LoRA on a store text model, through the one Trainer, into the
store as an adapter of BASE (PEFT's files; its manifest records BASE and the sha256 of BASE's weights).

The base is loaded in float32 (a GGUF dequantised), frozen; only the adapter's A and B are in the optimizer
(AdamW) and in the checkpoints, which the Trainer writes atomically in PUHUI_HOME/runs/finetune-NAME (a killed
run resumes with `resume=True` and ends with the same adapter). bf16 autocast where the CPU has native bf16
(AVX512-BF16 or AMX) or on CUDA, unless `amp=None`; gradient checkpointing on the decoder blocks when asked.
Rows are right-padded (causal attention: the padding changes nothing before it) and the loss is the mean over
the trained tokens of a batch, as transformers computes it.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import BadInput, Unsupported
from ..progress import ProgressFn, say
from .chat_data import IGNORE, Sample, pack, read_samples
from .lora import LoRA, TARGETS

METHODS = ("lora",)


class Rows(Dataset):
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def collate(pad_id: int):
    def fn(batch: list[Sample]):
        T = max(len(s.ids) for s in batch)
        ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
        for i, s in enumerate(batch):
            ids[i, :len(s.ids)] = torch.tensor(s.ids)
            labels[i, :len(s.labels)] = torch.tensor(s.labels)
        return ids, labels
    return fn


def lm_loss(lora: LoRA, batch) -> torch.Tensor:
    """Mean cross-entropy of the trained tokens (labels != IGNORE), each predicted from the ones before."""
    ids, labels = batch
    logits = lora(ids)[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


def native_bf16() -> bool:
    from ..hardware import probe

    isa = probe().isa
    return bool(isa.get("avx512_bf16") or isa.get("amx_bf16") or isa.get("amx_tile"))


def finetune(base: str, data: str | Path, *, name: str, method: str = "lora", rank: int = 16, alpha: float = 32,
             dropout: float = 0.0, targets=TARGETS, epochs: int = 3, lr: float = 2e-4, batch_size: int = 4,
             max_seq_len: int = 1024, validation: str | Path | None = None, resume: bool = False, seed: int = 0,
             amp: str | None = "auto", gradient_checkpointing: bool = False, packing: bool = False,
             patience: int | None = None, progress: ProgressFn | None = None) -> dict:
    """Train a LoRA adapter of store model `base` on `data`; save it as store model `name`. Returns the final
    train (and validation) loss, steps, trained tokens, tokens/s and peak RSS."""
    from .. import store
    from ..models.loader import load_causal_lm
    from ..store.install import adapter_base
    from ..tasks import manifest as task_manifest
    from .trainer import TrainConfig, fit

    if method not in METHODS:
        raise Unsupported(f"method {method!r}: puhui fine-tunes with {', '.join(METHODS)} for now (qlora and full "
                          f"fine-tuning are not built yet)", param="method")
    store.check_name(name)
    m = task_manifest(base, "text-generation", "fine-tuning")
    if "adapter" in m.extra:
        raise BadInput(f"{base!r} is an adapter; fine-tune its base {m.extra['adapter'].get('base')!r}",
                       param="base")
    if name == m.name:
        raise BadInput(f"the adapter needs a name of its own, not its base's {name!r}", param="name")
    loaded = load_causal_lm(m, dtype=torch.float32)
    model, tokenizer = loaded.model, loaded.tokenizer
    if not hasattr(model, "layers"):
        raise Unsupported(f"LoRA fine-tuning is for the Llama family; {m.name!r} is {m.architecture}", param="base")
    model.train()
    samples = read_samples(data, tokenizer, max_seq_len)
    val = read_samples(validation, tokenizer, max_seq_len) if validation is not None else None
    if packing:
        samples = pack(samples, max_seq_len)
    say(progress, f"data: {len(samples)} rows, {sum(s.trained for s in samples):,} trained tokens of "
                  f"{sum(len(s.ids) for s in samples):,}" + (f"; validation {len(val)} rows" if val else ""))
    lora = LoRA(model, rank=rank, alpha=alpha, dropout=dropout, targets=targets, seed=seed)
    if gradient_checkpointing:
        _checkpoint_blocks(model)
    use_amp = "bf16" if amp == "auto" and native_bf16() else (None if amp == "auto" else amp)
    from ..settings import get_settings

    run_dir = get_settings().home / "runs" / f"finetune-{name}"
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", seed=seed, amp=use_amp,
                      out_dir=str(run_dir), resume=resume, early_stopping_patience=patience,
                      monitor="val_loss" if val else "train_loss")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)
    t = time.perf_counter()
    result = fit(lora, lm_loss, Rows(samples), cfg, val_data=Rows(val) if val else None, collate_fn=collate(pad),
                 progress=progress)
    seconds = time.perf_counter() - t
    folder = Path(run_dir) / "adapter"
    lora.save(folder, m.name)
    info = adapter_base(m.name, name)
    store.save_model(name, "text-generation", "lora", "peft-lora",
                     {f: folder / f for f in ("adapter_config.json", "adapter_model.safetensors")},
                     main="adapter_model.safetensors", extra={"adapter": {**info, "r": rank, "lora_alpha": alpha,
                                                                         "target_modules": list(targets)}},
                     card=f"A LoRA adapter of {m.name} (rank {rank}, alpha {alpha}), fine-tuned by puhui on "
                          f"{Path(data).name}.", source=f"finetune:{m.name}")
    last = result.history[-1] if result.history else {}
    trained = sum(s.trained for s in samples) * epochs
    return {"name": name, "base": m.name, "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
            "epochs": len(result.history), "steps": result.global_step, "trained_tokens": trained,
            "tokens_per_s": sum(len(s.ids) for s in samples) * len(result.history) / max(seconds, 1e-9),
            "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "amp": use_amp, "run_dir": str(run_dir)}


def _checkpoint_blocks(model) -> None:
    """Recompute each decoder block's activations in the backward pass instead of keeping them."""
    from torch.utils.checkpoint import checkpoint

    for block in model.layers:
        forward = block.forward

        def wrapped(*args, _f=forward):
            return checkpoint(_f, *args, use_reentrant=False) if torch.is_grad_enabled() else _f(*args)
        block.forward = wrapped
