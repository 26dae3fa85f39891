"""Text -> IPA phonemes for Piper voices, by the espeak-ng program, sentence by sentence.

Piper voices (phoneme_type "espeak") were trained on espeak-ng's IPA, clause by clause, as piper's own
phonemizer makes it: each clause's phonemes, then the clause's punctuation (". ? ! , : ;"), a space after a
clause that does not end its sentence; "(en)"-style language-switch flags removed; the result decomposed
(NFD) into Unicode code points, each of which is one phoneme of the voice's phoneme_id_map.

Piper calls espeak-ng's library, which reports each clause's terminator. Here the `espeak-ng` program does
the phonemes (`espeak-ng -q --ipa -v VOICE`, one process a clause, the clauses of a sentence at once) and the
text is cut into sentences and clauses by its punctuation: a run of . ! ? ; : , followed by a space or the
end (so 3.5 and 1,000 stay whole; a few abbreviations such as "Dr." do not end a sentence). Plain `--ipa`
is used: espeak-ng 1.51's `--ipa=3` puts zero-width joiners inside diphthongs, which are not phonemes.

What is spoken: text with words in it, a letter or a digit of any script (`has_words`); emoji, punctuation,
symbols, control characters and whitespace alone are nothing to say (a caller refuses them), which holds whatever
this espeak-ng's emoji dictionary knows. Among words, espeak-ng reads the emoji and symbols it knows by name
("Hello 😀" -> "hello grinning face"; "$" -> "dollar") and skips the rest; control characters are dropped first.

Ids (Piper's phonemes_to_ids): "^" (BOS), then every phoneme followed by the pad "_", then "$" (EOS);
phonemes the map lacks are skipped, as Piper does.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass

from ..errors import BadInput, Unsupported

BOS, EOS, PAD = "^", "$", "_"
SENTENCE_ENDS = ".!?"
_CLAUSE = re.compile(r"(.*?)([.!?;:,]+)([\"'”’)\]]*)(?=\s|$)|(.+)$", re.S)
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "mt", "fig"}
_LANGUAGE_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)")
ESPEAK_TIMEOUT_S = 60
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x9f]")     # control characters that str.split() keeps


@dataclass(frozen=True)
class Clause:
    text: str
    terminator: str        # one of . ? ! , : ; or "" (text that ends without punctuation)

    @property
    def ends_sentence(self) -> bool:
        return self.terminator in SENTENCE_ENDS   # "" too: the end of the text


def has_words(text: str) -> bool:
    """Whether the text has something to say: a letter or a digit (Unicode's L and N categories)."""
    return any(unicodedata.category(c)[0] in "LN" for c in str(text))


def split_sentences(text: str) -> list[list[Clause]]:
    """The text's sentences, each a list of clauses with their punctuation (control characters dropped)."""
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    sentences: list[list[Clause]] = []
    current: list[Clause] = []
    pending = ""    # an abbreviation's clause, carried into the next one
    for m in _CLAUSE.finditer(text):
        if m.group(4) is not None:
            body, punct = m.group(4), ""
        else:
            body, punct = m.group(1), m.group(2)
        body = f"{pending} {body.strip()}" if pending else body.strip()
        pending = ""
        if punct == "." and _is_abbreviation(body):
            pending = body + "."
            continue
        if not body.strip(" \"'“”‘’()[]-"):
            if current and punct:   # stray punctuation: it ends the clause before it
                current[-1] = Clause(current[-1].text, _terminator(punct))
            continue
        current.append(Clause(body, _terminator(punct)))
        if current[-1].ends_sentence:
            sentences.append(current)
            current = []
    if pending:
        current.append(Clause(pending, "."))
    if current:
        sentences.append(current)
    return sentences


def _is_abbreviation(body: str) -> bool:
    last = body.rsplit(" ", 1)[-1].lower()
    return last in _ABBREVIATIONS or bool(re.fullmatch(r"[a-z]", last))   # initials: "J. R. R."


def _terminator(punct: str) -> str:
    for mark in "?!.":
        if mark in punct:
            return mark
    return punct[0] if punct else ""


def espeak_program() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise Unsupported("speech synthesis needs the espeak-ng program for phonemes: install it "
                          "(apt-get install espeak-ng, brew install espeak-ng); `make setup` does")
    return path


def phonemize_clauses(clauses: list[Clause], voice: str = "en-us") -> str:
    """The phonemes of one sentence's clauses (NFD code points), punctuation kept as Piper does."""
    program = espeak_program()
    procs = [subprocess.Popen([program, "-q", "--ipa", "-v", voice, "--stdin"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in clauses]
    out = []
    try:
        for clause, proc in zip(clauses, procs):
            stdout, stderr = proc.communicate(clause.text.encode("utf-8"), timeout=ESPEAK_TIMEOUT_S)
            if proc.returncode != 0:
                reason = stderr.decode("utf-8", "replace").strip().splitlines()
                raise BadInput(f"espeak-ng failed on voice {voice!r}: {reason[-1] if reason else proc.returncode}")
            lines = [ln.strip() for ln in stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
            phonemes = _LANGUAGE_FLAG.sub("", " ".join(lines)).strip()
            if phonemes:
                out.append(phonemes + clause.terminator + ("" if clause.ends_sentence else " "))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return unicodedata.normalize("NFD", "".join(out).strip())


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's ids: BOS, each known phoneme followed by the pad, EOS."""
    pad = id_map[PAD]
    ids = list(id_map[BOS]) + list(pad)
    for p in phonemes:
        if p in id_map:
            ids += id_map[p] + pad
    return ids + list(id_map[EOS])
