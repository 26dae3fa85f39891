"""Fine-tuning data: a file in, token ids and labels out, the loss on what the assistant says and nothing else.

Lines of a `.jsonl` file are OpenAI's chat fine-tuning rows (`{"messages": [...]}`, an assistant message may
carry `"weight": 0` to be context only), `{"prompt", "completion"}` rows (a user turn and the answer), or
`{"text"}` rows (all of it trained); a `.txt` file is one sample per non-empty paragraph (all trained).

Chats go through the model's own chat template. For each assistant turn i, the template's prompt for
messages[:i] (with its generation prompt) must be a prefix of its text for messages[:i + 1]: what lies between
is the answer and the template's end of turn, trained (labels = ids); everything else (system, user, template
tokens) is context (labels = -100). A bad line is a BadInput naming the file and its line; nothing is dropped
silently: a sample longer than max_seq_len is an error naming it (the caller may raise max_seq_len).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

IGNORE = -100
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class Sample:
    ids: list[int]
    labels: list[int]          # IGNORE where no loss is taken
    line: int                  # where it came from (1-based), for messages

    @property
    def trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def read_samples(path: str | Path, tokenizer, max_seq_len: int = 1024) -> list[Sample]:
    """The samples of a fine-tuning file (see the module's policy)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file", param="data")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 text (byte {e.start})", param="data") from None
    where = path.name
    samples = []
    if path.suffix == ".txt":
        for number, para in _paragraphs(text):
            ids = tokenizer.encode(para)
            samples.append(_checked(Sample(ids, list(ids), number), where, max_seq_len))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{where} line {number}: not JSON ({e.msg})", param="data") from None
            samples.append(_checked(_row(row, tokenizer, f"{where} line {number}", number), where, max_seq_len))
    if not samples:
        raise BadInput(f"{where}: no samples", param="data")
    return samples


def _paragraphs(text: str):
    start, lines = None, []
    for number, line in enumerate(text.splitlines() + [""], 1):
        if line.strip():
            start = start or number
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            start, lines = None, []


def _checked(s: Sample, where: str, max_seq_len: int) -> Sample:
    if len(s.ids) > max_seq_len:
        raise BadInput(f"{where} line {s.line}: {len(s.ids)} tokens, more than max_seq_len {max_seq_len} (raise "
                       f"--max-seq-len, or shorten it: nothing is cut silently)", param="max_seq_len")
    if not s.trained:
        raise BadInput(f"{where} line {s.line}: nothing to learn (no assistant message with weight 1)", param="data")
    return s


def _row(row, tokenizer, where: str, number: int) -> Sample:
    if not isinstance(row, dict):
        raise BadInput(f"{where}: a JSON object is expected", param="data")
    if "messages" in row:
        return _chat(row["messages"], tokenizer, where, number)
    if "prompt" in row or "completion" in row:
        p, c = row.get("prompt"), row.get("completion")
        if not isinstance(p, str) or not isinstance(c, str) or not c:
            raise BadInput(f"{where}: prompt and completion must be strings (completion not empty)", param="data")
        return _chat([{"role": "user", "content": p}, {"role": "assistant", "content": c}], tokenizer, where, number)
    if "text" in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise BadInput(f"{where}: text must be a non-empty string", param="data")
        ids = tokenizer.encode(row["text"])
        return Sample(ids, list(ids), number)
    raise BadInput(f"{where}: neither messages, prompt/completion nor text", param="data")


def _chat(messages, tokenizer, where: str, number: int) -> Sample:
    if not isinstance(messages, list) or not messages:
        raise BadInput(f"{where}: messages must be a non-empty list", param="data")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadInput(f"{where}: messages[{i}] needs a role among {', '.join(ROLES)}", param="data")
        if not isinstance(m.get("content"), str):
            raise BadInput(f"{where}: messages[{i}].content must be a string", param="data")
        weight = m.get("weight", 1)
        if weight not in (0, 1) or (weight == 0 and m["role"] != "assistant"):
            raise BadInput(f"{where}: messages[{i}].weight is 0 or 1, on assistant messages only", param="data")
        clean.append(({"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]},
                      weight))
    if not any(m["role"] == "assistant" for m, _ in clean):
        raise BadInput(f"{where}: no assistant message to learn", param="data")
    ids, labels, done = [], [], ""
    for i, (m, weight) in enumerate(clean):
        if m["role"] != "assistant":
            continue
        history = [c for c, _ in clean[:i]]
        prompt = tokenizer.render_chat(history, add_generation_prompt=True) if history else ""
        full = tokenizer.render_chat(history + [m], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise BadInput(f"{where}: the chat template does not render this conversation turn by turn (a prefix "
                           f"changes at message {i}); train on it as text instead", param="data")
        context = tokenizer.encode(prompt[len(done):], add_special_tokens=False)
        answer = tokenizer.encode(full[len(prompt):], add_special_tokens=False)
        ids += context + answer
        labels += [IGNORE] * len(context) + (answer if weight else [IGNORE] * len(answer))
        done = full
    return Sample(ids, labels, number)


def pack(samples: list[Sample], max_seq_len: int) -> list[Sample]:
    """Samples joined into rows of at most max_seq_len tokens, first fit in order (fewer, fuller rows: less
    padding). Labels keep their masks; the first token of each joined sample is not predicted from the one
    before (its label is ignored), but attention does cross samples within a row (no block mask)."""
    rows: list[Sample] = []
    for s in samples:
        if rows and len(rows[-1].ids) + len(s.ids) <= max_seq_len:
            rows[-1].ids += s.ids
            rows[-1].labels += [IGNORE] + s.labels[1:]
        else:
            rows.append(Sample(list(s.ids), list(s.labels), s.line))
    return rows
