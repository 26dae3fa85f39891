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
models_app = typer.Typer(help="The model store: list, info, import, rm, pull, verify.", no_args_is_help=True)
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


def _progress(as_json: bool = False):
    """Progress bars, and messages above them (on stderr with --json, whose stdout is the one JSON object)."""
    from .progress import RichProgress
    return RichProgress(transient=True, messages=(lambda s: typer.echo(s, err=True)) if as_json else None)


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
                  package: bool = typer.Option(False, "--package", help="PATH is an installed Python package."),
                  base: Optional[str] = typer.Option(None, "--base", help="A LoRA adapter's base (a store model).")):
    """Import a Hugging Face folder, a .gguf or .safetensors file, a PEFT LoRA adapter folder (with --base), or
    an installed package carrying weights."""
    from . import store

    with _progress() as p:
        if package or (not Path(path).exists() and _is_distribution(path)):
            m = store.import_package(path, name, task=task, progress=p)
        else:
            m = store.import_path(path, name, task=task, progress=p, base=base)
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


@models_app.command("export")
def models_export(name: str, out: str = typer.Option(..., "--out", help="The folder (safetensors) or .gguf file."),
                  merged: bool = typer.Option(False, "--merged", help="Merge a LoRA adapter into its base."),
                  fmt: str = typer.Option("safetensors", "--format", help="safetensors or gguf.")):
    """Write a LoRA adapter merged into its base, as a Hugging Face folder or a float32 GGUF."""
    from . import store
    from .compress import export
    from .errors import BadInput

    m = store.get(name)
    info = m.extra.get("adapter")
    if not isinstance(info, dict):
        raise BadInput(f"{name!r} is not a LoRA adapter: only adapters export (merged into their base)",
                       param="name")
    if not merged:
        raise BadInput("say --merged: the adapter's own files are already PEFT's (in the store folder "
                       f"{m.folder})", param="merged")
    if fmt not in ("safetensors", "gguf"):
        raise BadInput(f"--format is safetensors or gguf, not {fmt!r}", param="format")
    base = store.get(info["base"])
    if fmt == "gguf":
        path = export.export_gguf(base, m.folder, out)
    else:
        from .tasks import load
        tokenizer = load(base, task="text-generation", max_batch=1).tokenizer if base.format == "gguf" else None
        path = export.export_safetensors(base, m.folder, out, tokenizer=tokenizer)
    typer.echo(f"wrote {path}: {name} merged into {base.name} ({fmt})")


@models_app.command("pull")
def models_pull(hub_id: str, name: Optional[str] = typer.Option(None, "--name"),
                task: Optional[str] = typer.Option(None, "--task"),
                filename: Optional[str] = typer.Option(None, "--file", help="One file of the repo, e.g. a .gguf")):
    """Download a model from the Hugging Face Hub into the store (needs a network)."""
    from . import store

    with _progress() as p:
        m = store.pull(hub_id, name=name, task=task, filename=filename, progress=p)
    typer.echo(f"pulled {m.name}: {m.task}, {m.format}, {_human(m.size)}")


@models_app.command("verify")
def models_verify(name: Optional[str] = typer.Argument(None, help="A model (default: every model of the store)."),
                  as_json: bool = typer.Option(False, "--json")):
    """Check every file of a model (or of every model) against the sha256 its manifest records: one line a
    model, "ok" or the damaged and missing files; exit 2 when any is."""
    from . import store
    from .errors import ModelCorrupt

    with _progress(as_json) as p:
        reports = store.verify(name, progress=p)
    if as_json:
        _print_json([r.to_dict() for r in reports])
    elif not reports:
        typer.echo("the store is empty")
    for r in reports if not as_json else ():
        typer.echo(f"{r.model:32} {r.line()}")
    bad = [r.model for r in reports if r.problems]
    if bad:
        raise ModelCorrupt(f"{len(bad)} of {len(reports)} models have damaged or missing files: {', '.join(bad)}; "
                           f"import them again")


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

    with _progress(as_json) as p:
        res = run(data, target, epochs=epochs, hidden=tuple(hidden), lr=lr, batch_size=batch_size, engine=engine,
                  name=name, seed=seed, resume=resume, patience=patience, progress=p)
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
def finetune(
    base: str,
    data: str = typer.Option(..., "--data", help="JSONL (OpenAI chat rows, prompt/completion, text) or .txt."),
    name: str = typer.Option(..., "--name", help="The adapter's name in the store."),
    method: str = typer.Option("lora", "--method", help="lora (qlora and full are not built yet)."),
    epochs: int = typer.Option(3, "--epochs"),
    rank: int = typer.Option(16, "--rank"),
    alpha: float = typer.Option(32, "--alpha"),
    dropout: float = typer.Option(0.0, "--dropout"),
    targets: str = typer.Option(",".join(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj")), "--targets", help="Comma-separated projections."),
    lr: float = typer.Option(2e-4, "--lr"),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_seq_len: int = typer.Option(1024, "--max-seq-len"),
    validation: Optional[str] = typer.Option(None, "--validation", help="A validation file (early stopping)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Epochs without a better validation loss."),
    packing: bool = typer.Option(False, "--packing", help="Join short samples into full rows."),
    checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
):
    """Fine-tune a store text model with LoRA on your data: the adapter is a store model NAME that `puhui run`,
    `puhui chat`, `puhui.load` and `puhui serve` use (beside its base)."""
    from .train.finetune import finetune as run

    with _progress(as_json) as p:
        res = run(base, data, name=name, method=method, rank=rank, alpha=alpha, dropout=dropout,
                  targets=tuple(t.strip() for t in targets.split(",") if t.strip()), epochs=epochs, lr=lr,
                  batch_size=batch_size, max_seq_len=max_seq_len, validation=validation, resume=resume, seed=seed,
                  gradient_checkpointing=checkpointing, packing=packing, patience=patience, progress=p)
    if as_json:
        return _print_json(res)
    val = f", validation loss {res['val_loss']:.4f}" if res["val_loss"] is not None else ""
    typer.echo(f"saved adapter {res['name']} of {res['base']}: train loss {res['train_loss']:.4f}{val}, "
               f"{res['steps']} steps, {res['tokens_per_s']:.0f} tokens/s, peak RSS {res['peak_rss_mb']:.0f} MB")


@app.command()
def predict(name: str, data: str = typer.Option(..., "--data", help="A CSV with the model's input columns."),
            out: Optional[str] = typer.Option(None, "--out", help="Write the predictions CSV here (default: stdout).")):
    """Predict with a trained classifier (the CSV's rows plus prediction and class probabilities) or recommender
    (the rows plus their click probability, `score`)."""
    from .tasks import load

    model = load(name, task=("classification", "recommendation"), what="`puhui predict`")
    text = model.predict_csv(data, out)
    if out:
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


# ------------------------------------------------------------------------------------------------ text

def _text_generator(model: str, quant: Optional[str] = None):
    from .tasks import load

    return load(model, task="text-generation", max_batch=1, quant=quant)


def _sampling(max_tokens, temperature, top_p, seed) -> dict:
    """The sampling options, checked before any model is loaded."""
    from .tasks.text import check_sampling

    sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    check_sampling(**sampling)
    return sampling


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("run")
def run_text(
    model: str = typer.Argument(..., help="Model name or alias in the store, e.g. smollm2-135m-instruct."),
    prompt: Optional[str] = typer.Argument(None, help="The prompt (default: read from stdin)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="At most this many new tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy (default: the model's own, "
                                                                       "else 1)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Default: the model's own, else 1."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    system: Optional[str] = typer.Option(None, "--system", help="A system message (chat models)."),
    raw: bool = typer.Option(False, "--raw", help="Complete the prompt as it is, without the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with text and usage."),
    fmt: Optional[str] = typer.Option(None, "--format", help="json: the answer is one JSON object (constrained "
                                                             "decoding; ask for JSON in the prompt too)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="int4: 4-bit weights (faster on a CPU)."),
    schema: Optional[str] = typer.Option(None, "--schema", help="A JSON Schema file: the answer is a document of "
                                                                "it (constrained decoding)."),
):
    """Generate text from a prompt, streamed to the terminal. A chat model gets it as a user message."""
    from .errors import BadInput

    if fmt not in (None, "json"):
        raise BadInput(f"--format {fmt!r}: the only format is json")
    if schema is not None and fmt is not None:
        raise BadInput("--schema and --format json: give one (a schema's answer is JSON already)")
    if prompt is None:
        prompt = sys.stdin.read().rstrip("\n")
    sampling = _sampling(max_tokens, temperature, top_p, seed)
    if fmt == "json":
        sampling["json_mode"] = True
    if schema is not None:
        sampling["json_schema"] = _read_schema(schema)
    gen = _text_generator(model, quant)
    chat = bool(gen.chat_template) and not raw
    what = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if as_json:
        r = gen.chat(what, **sampling) if chat else gen.generate(prompt, **sampling)
        return _print_json({"model": gen.name, "text": r.text, "finish_reason": r.finish_reason,
                            "usage": {"prompt_tokens": r.usage.prompt_tokens,
                                      "completion_tokens": r.usage.completion_tokens,
                                      "total_tokens": r.usage.total_tokens}})
    for delta in gen.stream(what if chat else prompt, **sampling):
        _write(delta)
    _write("\n")


def _read_schema(path: str) -> dict:
    from .errors import BadInput

    try:
        schema = json.loads(Path(path).read_text())
    except OSError as e:
        raise BadInput(f"--schema {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise BadInput(f"--schema {path}: not JSON ({e})") from None
    if not isinstance(schema, dict):
        raise BadInput(f"--schema {path}: a JSON Schema is an object")
    return schema


@app.command("chat")
def chat_text(
    model: str = typer.Argument(..., help="Model name or alias in the store."),
    system: Optional[str] = typer.Option(None, "--system", help="A system message to start with."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="At most this many tokens an answer."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy (default: the model's own, "
                                                                       "else 1)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Default: the model's own, else 1."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    quant: Optional[str] = typer.Option(None, "--quant", help="int4: 4-bit weights (faster on a CPU)."),
):
    """Chat with a model: /reset clears the history, /exit (or Ctrl-D) quits. From a pipe, each line is a message."""
    from .errors import BadInput, Unsupported

    sampling = _sampling(max_tokens, temperature, top_p, seed)
    gen = _text_generator(model, quant)
    if not gen.chat_template:
        raise Unsupported(f"model {gen.name!r} has no chat template; use `puhui run {gen.name} --raw`")
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"chatting with {gen.name} (/reset clears the history, /exit or Ctrl-D quits)", err=True)
    while True:
        try:
            line = input(">>> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit", "/bye"):
            break
        if line == "/reset":
            history = list(start)
            if interactive:
                typer.echo("(history cleared)", err=True)
            continue
        history.append({"role": "user", "content": line})
        answer = []
        try:
            for delta in gen.stream(history, **sampling):
                _write(delta)
                answer.append(delta)
        except BadInput as e:   # the conversation outgrew the context: say so, keep going
            history.pop()
            typer.echo(f"error: {e} (/reset starts over)", err=True)
            continue
        _write("\n")
        history.append({"role": "assistant", "content": "".join(answer)})


# ------------------------------------------------------------------------------------------------ recommendation

@train_app.command("deepfm")
def train_deepfm(
    data: str = typer.Option("ml-100k", "--data", help="ml-100k (MovieLens-100k), or a CSV/Parquet file with --spec."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Feature spec (JSON/TOML file or inline JSON): sparse, "
                                                             "multi_hot, dense, label, user, item ..."),
    model: str = typer.Option("deepfm", "--model", help="deepfm, fm or widedeep."),
    epochs: int = typer.Option(10, "--epochs", help="At most this many epochs (early stopping, patience 2)."),
    embed_dim: int = typer.Option(16, "--embed-dim", help="Embedding size."),
    hidden: List[int] = typer.Option([256, 128], "--hidden", help="DNN layer size; repeat for more layers."),
    dropout: float = typer.Option(0.2, "--dropout"),
    l2: float = typer.Option(1e-5, "--l2", help="L2 on the embeddings a batch uses."),
    lr: float = typer.Option(3e-3, "--lr"),
    batch_size: int = typer.Option(1024, "--batch-size"),
    negatives: int = typer.Option(4, "--negatives", help="Sampled negatives a positive (the top-k model)."),
    patience: int = typer.Option(2, "--patience", help="Epochs without a better validation score before stopping."),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the store (default: DATA-MODEL)."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the runs from their last checkpoints."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
):
    """Train a recommender (DeepFM, FM or Wide&Deep): CTR AUC/log loss on a random split, HR@10/NDCG@10 top-k."""
    from .train.recommender import train_recommender

    with _progress(as_json) as p:
        res = train_recommender(data, spec, model=model, epochs=epochs, embed_dim=embed_dim, hidden=tuple(hidden),
                                dropout=dropout, l2=l2, lr=lr, batch_size=batch_size, n_neg=negatives,
                                patience=patience, name=name, seed=seed, resume=resume, progress=p)
    if as_json:
        return _print_json(res)
    typer.echo(f"CTR    {res['ctr_split']}: test AUC {res['test_auc']:.4f}, log loss {res['test_logloss']:.4f}")
    if res["hr@10"] is not None:
        typer.echo(f"top-k  leave-one-out, test item among 99 sampled negatives: HR@10 {res['hr@10']:.4f}, "
                   f"NDCG@10 {res['ndcg@10']:.4f}; among all unseen items: HR@10 {res['hr@10_full']:.4f}, "
                   f"NDCG@10 {res['ndcg@10_full']:.4f}")
    typer.echo(f"saved model {res['model']}; loss curves in {res['run_dir']}")


@app.command()
def recommend(
    name: str = typer.Argument(..., help="A recommendation model in the store."),
    user: str = typer.Option(..., "--user", help="The user's id."),
    k: int = typer.Option(10, "--k", min=1, help="How many items."),
    exclude_seen: bool = typer.Option(False, "--exclude-seen", help="Leave out items the user interacted with."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Top-k items for a user; an unknown user gets the most popular items (cold start)."""
    import puhui

    res = puhui.load(name, task="recommendation").recommend(user, k=k, exclude_seen=exclude_seen)
    if as_json:
        return _print_json(res)
    if res["cold_start"]:
        typer.echo(f"cold start: {res['note']}", err=True)
    for rank, it in enumerate(res["items"], 1):
        typer.echo(f"{rank:>3}  {it['item']:>10}  {it['score']:.4f}  {it.get('name', '')}".rstrip())


# ------------------------------------------------------------------------------------------------ speech

_AUDIO_SUFFIXES = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg", ".mp3": "mp3", ".opus": "opus",
                   ".aac": "aac", ".pcm": "pcm", ".raw": "pcm"}


def _speech_model(model: str, task: str, **options):
    from .tasks import load

    return load(model, task=task, **options)


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m):02d}:{s:06.3f}"


@app.command()
def transcribe(
    model: str = typer.Argument(..., help="A transcription model or alias, e.g. whisper-tiny.en or whisper-1."),
    audio: str = typer.Argument(..., help="An audio file: wav, flac, ogg, mp3 ..."),
    language: Optional[str] = typer.Option(None, "--language", help="The spoken language, e.g. en (default: "
                                                                    "detected; English-only models: en)."),
    fmt: str = typer.Option("text", "--format", help="text, json, verbose_json, srt or vtt."),
    timestamps: Optional[str] = typer.Option(None, "--timestamps", help="segment or word: times in verbose_json "
                                                                        "(and per line with text)."),
    engine: str = typer.Option("faster-whisper", "--engine", help="faster-whisper (CTranslate2, int8) or puhui "
                                                                  "(puhui's PyTorch Whisper)."),
    translate: bool = typer.Option(False, "--translate", help="Translate into English (multilingual models)."),
):
    """Transcribe speech: the text, or subtitles (srt, vtt), or JSON with segments and words."""
    from .audio.transcript import RESPONSE_FORMATS
    from .errors import BadInput
    from .tasks.speech import ENGINES

    if fmt not in RESPONSE_FORMATS:
        raise BadInput(f"--format {fmt!r}: use one of {', '.join(RESPONSE_FORMATS)}")
    if timestamps not in (None, "segment", "word"):
        raise BadInput(f"--timestamps {timestamps!r}: use segment or word")
    if engine not in ENGINES:
        raise BadInput(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    if not Path(audio).is_file():
        raise BadInput(f"{audio}: no such audio file")
    if timestamps is None and fmt in ("verbose_json", "srt", "vtt"):
        timestamps = "segment"
    asr = _speech_model(model, "transcription", engine=engine)
    result = asr.transcribe(audio, language=language, timestamps=timestamps, engine=engine,
                            task="translate" if translate else "transcribe")
    if fmt == "text" and timestamps:
        for s in result.segments:
            typer.echo(f"[{_clock(s.start)} --> {_clock(s.end)}] {s.text.strip()}")
        return
    granularities = ("segment", "word") if timestamps == "word" else ("segment",)
    typer.echo(result.format(fmt, granularities).rstrip("\n"))


@app.command()
def speak(
    voice: str = typer.Argument(..., help="A voice (speech model) or alias, e.g. piper-joe or tts-1."),
    text: Optional[str] = typer.Argument(None, help="What to say (default: read from stdin)."),
    out: str = typer.Option(..., "--out", help="Write the audio here, e.g. speech.wav; - writes it to stdout."),
    speed: float = typer.Option(1.0, "--speed", help="0.25 to 4.0; above 1 is faster."),
    fmt: Optional[str] = typer.Option(None, "--format", help="wav, flac, ogg, mp3, opus, aac or pcm (16-bit "
                                                             "little-endian, no header); default: from --out's "
                                                             "suffix, else wav."),
):
    """Speak text with a voice and write the audio to a file."""
    from .atomic import write_atomic
    from .audio.encode import check_format, encode
    from .tasks.speech import MAX_SPEED, MIN_SPEED

    fmt = check_format(fmt or _AUDIO_SUFFIXES.get(Path(out).suffix.lower(), "wav"))
    from .errors import BadInput

    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadInput(f"--speed {speed}: must be between {MIN_SPEED} and {MAX_SPEED}")
    if out != "-" and not Path(out).resolve().parent.is_dir():
        raise BadInput(f"--out {out}: no such folder {Path(out).resolve().parent}")
    if text is None:
        text = sys.stdin.read()
    model = _speech_model(voice, "speech")
    if out == "-":
        for data in model.encoded(text, fmt, speed):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    samples, rate = model.speak(text, speed)
    data = encode(samples, rate, fmt)
    write_atomic(out, data)
    rate_note = f", {rate} Hz 16-bit mono" if fmt == "pcm" else ""
    typer.echo(f"wrote {out} ({len(samples) / rate:.1f} s of speech, {fmt}{rate_note}, {len(data)} bytes)")


# ------------------------------------------------------------------------------------------------ detection

@train_app.command("detr")
def train_detr(
    data: str = typer.Option("synthetic", "--data", help="synthetic (digits puhui generates), or a COCO or YOLO "
                                                        "folder (found out by itself)."),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    image_size: int = typer.Option(128, "--image-size", help="Images are resized to this square size."),
    pretrain_epochs: int = typer.Option(4, "--pretrain-epochs", help="Epochs of backbone pre-training on object "
                                                                     "crops (0: none)."),
    train_images: int = typer.Option(2000, "--train-images", help="Training images of the synthetic set."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping on validation mAP@.5."),
    name: Optional[str] = typer.Option(None, "--name", help="Name in the store (default: detr-synthetic, or "
                                                           "FOLDER-detr)."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
):
    """Train a small DETR (conditional, two-stage) from scratch; print pycocotools mAP@.5 and mAP@[.5:.95]."""
    from .tasks.detection import train_detr as run

    with _progress(as_json) as p:
        res = run(data, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
                  train_images=train_images, pretrain_epochs=pretrain_epochs, name=name, seed=seed, resume=resume,
                  patience=patience, progress=p)
    if as_json:
        return _print_json(res)
    typer.echo(f"mAP@.5 {res['map50']:.4f}   mAP@[.5:.95] {res['map']:.4f}   (pycocotools, {res['eval_images']} "
               f"{res['eval_split']} images)")
    typer.echo(f"saved model {res['model']}; loss curve in {res['run_dir']}")


@app.command()
def detect(
    model: str = typer.Argument(..., help="A detection model in the store, e.g. detr-synthetic."),
    image: str = typer.Argument(..., help="An image file."),
    threshold: float = typer.Option(0.7, "--threshold", min=0.0, max=1.0, help="Keep objects scoring above this."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the image with the boxes drawn here (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Detect objects in an image: one line an object, and the image with labelled boxes (--out)."""
    import puhui
    from .errors import BadInput

    if not Path(image).is_file():
        raise BadInput(f"{image}: no such file", param="image")
    detector = puhui.load(model, task="detection")
    found = detector.detect(image, threshold)
    if out:
        detector.draw(image, found, out)
    if as_json:
        return _print_json({"model": detector.name, "image": image, "threshold": threshold, "objects": found,
                            "out": out})
    typer.echo(f"Detected {len(found)} objects:")
    for i, o in enumerate(found, 1):
        box = ", ".join(f"{v:.1f}" for v in o["box"])
        typer.echo(f"Object {i}: Class {o['label']}, Confidence {o['score']:.2f}, Box [{box}]")
    if out:
        typer.echo(f"wrote {out}", err=True)


# ------------------------------------------------------------------------------------------------ serve

@app.command("serve")
def serve_api(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    model: Optional[List[str]] = typer.Option(None, "--model", help="A model to serve (repeat for more); default: "
                                                                   "the packaged text, embeddings and speech models, "
                                                                   "and detr-synthetic once trained."),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="Require this Bearer key (repeat for more); "
                                                                       "also from PUHUI_API_KEYS."),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="Sequences that may wait per text model (then 429)."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Sequences generated at once per text model."),
    context: Optional[int] = typer.Option(None, "--context", min=1, help="Context window of the text models, in tokens "
                                                                  "(default: the model's, at most 4096)."),
    timeout: float = typer.Option(600, "--timeout", min=0.001, help="Seconds a request may take (then 504)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback address without an API key."),
    quant: Optional[str] = typer.Option(None, "--quant", help="int4: text models with 4-bit weights (a Q4 GGUF's own "
                                                              "codes; faster decoding on a CPU)."),
    drain_timeout: float = typer.Option(30, "--drain-timeout", min=0,
                                        help="On SIGTERM or Ctrl+C: seconds the requests in progress have to finish "
                                             "(new ones get a 503 meanwhile); those left then end with a 503."),
):
    """Serve models over an OpenAI-compatible HTTP API (completions, chat, embeddings, audio, detections, models)."""
    from .serve import check_bind, serve
    from .tasks.defaults import default_models
    from .settings import get_settings

    keys = list(api_key or []) + get_settings().api_keys     # PUHUI_API_KEYS (or config.toml), parsed there
    check_bind(host, keys, insecure)     # before minutes of loading
    models = list(model or default_models())
    if not model:
        from . import store
        store.register_defaults()
    typer.echo(f"loading {', '.join(models)} ...", err=True)

    def ready(url: str) -> None:
        auth = ' -H "Authorization: Bearer $KEY"' if keys else ""
        typer.echo(f"puhui is serving {', '.join(models)} at {url}/v1  (try: curl {url}/v1/chat/completions{auth} "
                   f"-H 'Content-Type: application/json' -d '{{\"model\": \"gpt-3.5-turbo\", \"messages\": "
                   f"[{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}')")

    serve(models, host=host, port=port, api_keys=keys, max_queue=max_queue, max_batch=max_batch, context=context,
          request_timeout=timeout, insecure=insecure, on_ready=ready, log_level="warning", quant=quant,
          drain_timeout=drain_timeout)


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
