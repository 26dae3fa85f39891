"""The `puhui` command: one function a verb, each a thin call into the library."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import PuhuiError

app = typer.Typer(help="puhui (普惠): run, fine-tune, compress, serve and explain models on your own hardware.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(help="The model store: list, info, import, rm, pull.", no_args_is_help=True)
train_app = typer.Typer(help="Train a model and save it to the store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """What this machine has: cores, RAM, ISA flags, GPUs, free disk, torch."""
    from .hardware import probe
    from .settings import get_settings

    hw = probe(get_settings().home)
    if as_json:
        return _print_json(hw.as_dict())
    flags = " ".join(f for f, on in hw.isa.items() if on) or "none detected"
    typer.echo(f"cpu      {hw.cpu} ({hw.machine})")
    typer.echo(f"cores    {hw.physical_cores} physical, {hw.logical_cores} logical")
    typer.echo(f"ram      {_gb(hw.ram_bytes)} total, {_gb(hw.ram_available_bytes)} available")
    typer.echo(f"isa      {flags}")
    gpus = ", ".join(f"{g.name} ({_gb(g.memory_bytes)})" for g in hw.gpus) or "none"
    typer.echo(f"gpus     {gpus}")
    typer.echo(f"disk     {_gb(hw.disk_free_bytes)} free at {hw.disk_path}")
    typer.echo(f"torch    {hw.torch_version or 'not installed'}, {hw.torch_threads} threads")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _progress():
    from .progress import RichProgress
    return RichProgress(transient=True)


# ------------------------------------------------------------------------------------------------ models

@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")):
    """Every model in the store, one line each."""
    from . import store

    ms = store.list_models()
    if as_json:
        return _print_json([m.to_dict() for m in ms])
    if not ms:
        typer.echo("the store is empty: `puhui models register-defaults` or `puhui models import PATH --name NAME`")
    for m in ms:
        typer.echo(f"{m.name:32} {m.task:20} {m.architecture or '-':12} {m.format:12} {_human(m.size):>10}  {m.source}")


@models_app.command("info")
def models_info(name: str, as_json: bool = typer.Option(False, "--json")):
    """A model's manifest: task, architecture, format, files with sha256, source, licence."""
    from . import store

    m = store.get(name)
    if as_json:
        return _print_json(m.to_dict())
    for k in ("name", "task", "architecture", "format", "source", "licence", "created", "main"):
        typer.echo(f"{k:13} {getattr(m, k)}")
    typer.echo(f"{'size':13} {_human(m.size)}")
    typer.echo("files")
    for f in m.files:
        typer.echo(f"  {f.name}  {_human(f.size)}  sha256:{f.sha256}" + (f"  -> {f.path}" if f.path else ""))
    if m.extra:
        typer.echo("extra        " + json.dumps({k: v for k, v in m.extra.items() if k != "encoder"}, default=str)[:400])


@models_app.command("import")
def models_import(path: str, name: str = typer.Option(..., "--name", help="Name in the store."),
                  task: Optional[str] = typer.Option(None, "--task", help="Task when it cannot be inferred."),
                  package: bool = typer.Option(False, "--package", help="PATH is an installed Python package.")):
    """Import a Hugging Face folder, a .gguf or .safetensors file, or an installed package carrying weights."""
    from . import store

    with _progress() as p:
        if package or (not Path(path).exists() and _is_distribution(path)):
            m = store.import_package(path, name, task=task, progress=p)
        else:
            m = store.import_path(path, name, task=task, progress=p)
    typer.echo(f"imported {m.name}: {m.task}, {m.architecture or '-'}, {m.format}, {_human(m.size)}")


def _is_distribution(name: str) -> bool:
    from importlib import metadata
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


@models_app.command("rm")
def models_rm(name: str):
    """Remove a model from the store."""
    from . import store

    m = store.remove(name)
    typer.echo(f"removed {m.name}")


@models_app.command("pull")
def models_pull(hub_id: str, name: Optional[str] = typer.Option(None, "--name"),
                task: Optional[str] = typer.Option(None, "--task"),
                filename: Optional[str] = typer.Option(None, "--file", help="One file of the repo, e.g. a .gguf")):
    """Download a model from the Hugging Face Hub into the store (needs a network)."""
    from . import store

    with _progress() as p:
        m = store.pull(hub_id, name=name, task=task, filename=filename, progress=p)
    typer.echo(f"pulled {m.name}: {m.task}, {m.format}, {_human(m.size)}")


@models_app.command("register-defaults")
def models_register_defaults(as_json: bool = typer.Option(False, "--json")):
    """Register the packaged default models that are installed (idempotent)."""
    from . import store

    with _progress() as p:
        ms = store.register_defaults(progress=p)
    if as_json:
        return _print_json([m.name for m in ms])
    typer.echo("defaults: " + (", ".join(m.name for m in ms) or "none installed"))


# ------------------------------------------------------------------------------------------------ train

@train_app.command("classifier")
def train_classifier(
    data: Optional[str] = typer.Option(None, "--data", help="A CSV file; default: scikit-learn's breast-cancer data."),
    target: Optional[str] = typer.Option(None, "--target", help="The label column (default: the last column)."),
    epochs: int = typer.Option(20, "--epochs"),
    hidden: List[int] = typer.Option([50], "--hidden", help="Hidden layer size; repeat for more layers."),
    lr: float = typer.Option(1e-3, "--lr"),
    batch_size: int = typer.Option(32, "--batch-size"),
    engine: str = typer.Option("torch", "--engine", help="torch, or numpy (the from-scratch teaching engine)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the store."),
    seed: int = typer.Option(0, "--seed"),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping on validation accuracy."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
):
    """The seed §5 classifier: train an MLP, print Epoch/Loss lines, test accuracy and a confusion matrix."""
    from .tasks.classification import train_classifier as run

    log = (lambda s: typer.echo(s, err=True)) if as_json else typer.echo
    with _progress() as p:
        res = run(data, target, epochs=epochs, hidden=tuple(hidden), lr=lr, batch_size=batch_size, engine=engine,
                  name=name, seed=seed, resume=resume, patience=patience, progress=p,
                  log=lambda s: p.console_print(s, markup=False, highlight=False) if not as_json else log(s))
    if as_json:
        return _print_json(res)
    typer.echo(f"Accuracy: {100 * res['test_accuracy']:.1f}%   (scikit-learn MLPClassifier on the same split: "
               f"{100 * res['baseline_test_accuracy']:.1f}%)")
    classes = res["classes"]
    w = max(8, *(len(c) for c in classes))
    typer.echo("confusion matrix (rows: true, columns: predicted)")
    typer.echo(" " * (w + 1) + " ".join(f"{c:>{w}}" for c in classes))
    for c, row in zip(classes, res["confusion_matrix"]):
        typer.echo(f"{c:>{w}} " + " ".join(f"{v:>{w}}" for v in row))
    typer.echo(f"saved model {res['model']}; loss curve and confusion matrix in {res['run_dir']}")


@app.command()
def predict(name: str, data: str = typer.Option(..., "--data", help="A CSV with the model's input columns."),
            out: Optional[str] = typer.Option(None, "--out", help="Write the predictions CSV here (default: stdout).")):
    """Predict with a trained classifier: the CSV's rows plus prediction and class probabilities."""
    import puhui

    model = puhui.load(name)
    if not hasattr(model, "predict_csv"):
        from .errors import Unsupported
        raise Unsupported(f"model {name!r} is not a tabular classifier; `puhui predict` needs one")
    text = model.predict_csv(data, out)
    if out:
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


def main() -> None:
    """Console entry point: PuhuiError -> one line on stderr and its exit code."""
    try:
        app()
    except PuhuiError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
