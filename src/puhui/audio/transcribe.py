"""Speech to text with a Whisper model (models/whisper.py): the prompt, greedy decoding, 30-second windows.

The decoding follows openai-whisper's (which faster-whisper / CTranslate2 also follow):
- prompt: <|startoftranscript|>, then for multilingual models the language (detected from the first
  window when not given) and <|transcribe|> or <|translate|>, then <|notimestamps|> unless timestamps
  are asked for;
- the config's suppress_tokens are never generated and its begin_suppress_tokens (blank, <|endoftext|>)
  not as the first token;
- with timestamps, the timestamp rules: timestamps come in pairs and never decrease, the first token
  is a timestamp no later than 1 s, and a timestamp is taken whenever the timestamps together are more
  likely than the likeliest text token;
- decoding stops at <|endoftext|> or after max_new_tokens (by default half the decoder's positions,
  224, as whisper's sample_len and CTranslate2's max_length=448 give).
As in whisper's transcribe, the log-mel spectrogram of the whole recording is cut into windows of
3,000 frames (30 s), the last one zero-padded; with timestamps the next window starts at the last
closed segment's end. No temperature fallback and no conditioning on the previous window.
With skip_silence, a window is taken for silence, as whisper does, when <|nospeech|> is likelier than 0.6
right after <|startoftranscript|> and the decoded tokens' mean log-probability is below -1: its text is
dropped and the next window starts after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BadCheckpoint, BadInput
from ..models.whisper import Whisper
from .io import load_audio
from .mel import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, pad_or_trim

SECONDS_PER_TIMESTAMP = 0.02
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
MAX_INITIAL_TIMESTAMP = 1.0  # seconds


@dataclass(frozen=True)
class WhisperTokens:
    """The special token ids of a Whisper vocabulary, read from its tokenizer."""

    eot: int
    sot: int
    transcribe: int
    translate: int
    no_timestamps: int
    languages: dict = field(default_factory=dict)  # "en" -> id of <|en|>
    no_speech: int | None = None                   # <|nospeech|> (<|nocaptions|> in the older vocabularies)

    @property
    def timestamp_begin(self) -> int:  # <|0.00|>; the tokenizer.json of Whisper does not list timestamps
        return self.no_timestamps + 1

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "WhisperTokens":
        ids = {name: tokenizer.token_to_id(f"<|{name}|>")
               for name in ("endoftext", "startoftranscript", "transcribe", "translate", "notimestamps")}
        missing = [n for n, i in ids.items() if i is None]
        if missing:
            raise BadCheckpoint(f"not a Whisper tokenizer (no {', '.join(f'<|{n}|>' for n in missing)})")
        languages = {}
        for i in range(ids["startoftranscript"] + 1, ids["translate"]):
            token = tokenizer.id_to_token(i)
            if token and token.startswith("<|") and token.endswith("|>"):
                languages[token[2:-2]] = i
        no_speech = tokenizer.token_to_id("<|nospeech|>")
        if no_speech is None:
            no_speech = tokenizer.token_to_id("<|nocaptions|>")
        return cls(eot=ids["endoftext"], sot=ids["startoftranscript"], transcribe=ids["transcribe"],
                   translate=ids["translate"], no_timestamps=ids["notimestamps"], languages=languages,
                   no_speech=no_speech)

    def prompt(self, multilingual: bool, language: str | None = None, task: str = "transcribe",
               timestamps: bool = False) -> list[int]:
        tokens = [self.sot]
        if multilingual:
            if language not in self.languages:
                raise BadInput(f"language {language!r} (this model knows: {', '.join(self.languages)})",
                               param="language")
            if task not in ("transcribe", "translate"):
                raise BadInput(f"task {task!r} (use transcribe or translate)", param="task")
            tokens += [self.languages[language], self.transcribe if task == "transcribe" else self.translate]
        if not timestamps:
            tokens.append(self.no_timestamps)
        return tokens


def _apply_timestamp_rules(logits: torch.Tensor, generated: list[list[int]], eot: int, no_timestamps: int,
                           timestamp_begin: int) -> None:
    """openai-whisper's ApplyTimestampRules, in place on logits [B, vocab] (float32)."""
    neg = -float("inf")
    logits[:, no_timestamps] = neg
    for b, seq in enumerate(generated):
        last_ts = len(seq) >= 1 and seq[-1] >= timestamp_begin
        penultimate_ts = len(seq) < 2 or seq[-2] >= timestamp_begin
        if last_ts:
            if penultimate_ts:   # a pair just closed: text (or the end) comes next
                logits[b, timestamp_begin:] = neg
            else:                # an opening timestamp: not text
                logits[b, :eot] = neg
        stamps = [t for t in seq if t >= timestamp_begin]
        if stamps:               # timestamps never decrease (and a closing one may equal its opening one)
            lowest = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
            logits[b, timestamp_begin:lowest] = neg
        if not seq:              # the first token is a timestamp, at most MAX_INITIAL_TIMESTAMP in
            logits[b, :timestamp_begin] = neg
            logits[b, timestamp_begin + round(MAX_INITIAL_TIMESTAMP / SECONDS_PER_TIMESTAMP) + 1:] = neg
    logprobs = torch.log_softmax(logits, dim=-1)
    take_timestamp = logprobs[:, timestamp_begin:].logsumexp(-1) > logprobs[:, :timestamp_begin].max(-1).values
    logits[take_timestamp, :timestamp_begin] = neg


@torch.no_grad()
def greedy_decode(model: Whisper, audio_features: torch.Tensor, prompt: list[int], eot: int,
                  max_new_tokens: int | None = None, suppress_tokens=(), begin_suppress_tokens=(),
                  timestamps: WhisperTokens | None = None) -> list[list[int]]:
    """The generated tokens (without the prompt and <|endoftext|>) for each row of audio features [B, S, dim].

    suppress_tokens are never taken, begin_suppress_tokens not first; pass `timestamps` (the tokens)
    to apply the timestamp rules.
    """
    n_ctx, vocab = model.config.n_text_ctx, model.config.vocab_size
    limit = n_ctx - len(prompt)
    max_new_tokens = min(n_ctx // 2 if max_new_tokens is None else max_new_tokens, limit)  # whisper: n_ctx // 2
    if max_new_tokens <= 0:
        raise BadInput(f"a prompt of {len(prompt)} tokens leaves no room in the decoder's {n_ctx} positions",
                       param="prompt")
    suppress = [t for t in suppress_tokens if 0 <= t < vocab]
    begin = [t for t in begin_suppress_tokens if 0 <= t < vocab]
    B = audio_features.shape[0]
    cache = model.new_cache(B)
    tokens = torch.tensor([prompt] * B, device=audio_features.device)
    logits = model.decoder(tokens, audio_features, 0, cache)[:, -1]
    generated: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        logits = logits.float()
        logits[:, suppress] = -float("inf")
        if step == 0:
            logits[:, begin] = -float("inf")
        if timestamps is not None:
            _apply_timestamp_rules(logits, generated, eot, timestamps.no_timestamps, timestamps.timestamp_begin)
        nxt = logits.argmax(-1)
        for b, t in enumerate(nxt.tolist()):
            if done[b]:
                nxt[b] = eot
            elif t == eot:
                done[b] = True
            else:
                generated[b].append(t)
        if all(done) or step == max_new_tokens - 1:
            break
        logits = model.decoder(nxt[:, None], audio_features, len(prompt) + step, cache)[:, -1]
    return generated


@torch.no_grad()
def detect_language(model: Whisper, audio_features: torch.Tensor, tokens: WhisperTokens) -> str:
    """The language whose token is likeliest right after <|startoftranscript|> (first row of the features)."""
    if not tokens.languages:
        raise BadInput("this Whisper tokenizer has no language tokens")
    logits = model.decoder(torch.tensor([[tokens.sot]], device=audio_features.device), audio_features[:1])[0, -1]
    codes = list(tokens.languages)
    ids = torch.tensor([tokens.languages[c] for c in codes], device=logits.device)
    return codes[int(logits[ids].argmax())]


def _next_seek(seq: list[int], timestamp_begin: int, size: int) -> int:
    """Mel frames to advance after a window of `size` frames: to the last closed segment's end, or all of it."""
    is_ts = [t >= timestamp_begin for t in seq]
    closed = [i for i in range(1, len(seq)) if is_ts[i - 1] and is_ts[i]]  # consecutive timestamps: end|start
    if not closed or is_ts[-2:] == [False, True]:  # none, or the text ran to the window's end
        return size
    end = seq[closed[-1] - 1] - timestamp_begin    # in 20 ms steps: 2 mel frames each
    return 2 * end if end > 0 else size


@dataclass
class Window:
    """One decoded 30-second window: where it starts (mel frames, 10 ms each) and how many frames of audio
    it holds, the generated tokens (timestamps included when asked for), and whisper's no-speech figures."""

    seek: int
    size: int
    tokens: list[int]
    language: str | None
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    silent: bool = False


def decode_windows(model: Whisper, tokenizer, audio, language: str | None = None, task: str = "transcribe",
                   timestamps: bool = False, max_new_tokens: int | None = None, skip_silence: bool = False):
    """The Windows of `audio` (a path, a file's bytes, or 16 kHz samples), in order, each decoded greedily.
    skip_silence: score each window (no-speech probability, mean token log-probability) and empty the
    tokens of one taken for silence."""
    samples = load_audio(audio)
    tokens = WhisperTokens.from_tokenizer(tokenizer)
    config = model.config
    param = next(model.parameters())
    mel = log_mel_spectrogram(samples, n_mels=config.n_mels, padding=N_SAMPLES)  # as whisper: whole, then cut
    content_frames = len(samples) // HOP_LENGTH
    prompt = None
    seek = 0
    while seek < content_frames:
        size = min(N_FRAMES, content_frames - seek)
        window = pad_or_trim(mel[:, seek:seek + size], N_FRAMES)  # the last window: zeros after the audio
        with torch.no_grad():
            features = model.encoder(window[None].to(param.device, param.dtype))
        if prompt is None:
            if config.is_multilingual and language is None:
                language = detect_language(model, features, tokens)
            prompt = tokens.prompt(config.is_multilingual, language, task, timestamps)
        seq = greedy_decode(model, features, prompt, tokens.eot, max_new_tokens, config.suppress_tokens,
                            config.begin_suppress_tokens, tokens if timestamps else None)[0]
        out = Window(seek, size, seq, language)
        if skip_silence:
            out.no_speech_prob, out.avg_logprob = _score(model, features, prompt, seq, tokens)
            out.silent = out.no_speech_prob > NO_SPEECH_THRESHOLD and out.avg_logprob < LOGPROB_THRESHOLD
            if out.silent:
                out.tokens = []
        yield out
        seek += _next_seek(seq, tokens.timestamp_begin, size) if timestamps and not out.silent else size


@torch.no_grad()
def _score(model: Whisper, features: torch.Tensor, prompt: list[int], seq: list[int],
           tokens: WhisperTokens) -> tuple[float, float]:
    """(probability of <|nospeech|> right after <|startoftranscript|>, mean log-probability of the generated
    tokens and <|endoftext|>), from one pass of the decoder over the whole sequence."""
    full = (prompt + seq + [tokens.eot])[:model.config.n_text_ctx]
    logprobs = torch.log_softmax(model.decoder(torch.tensor([full], device=features.device), features)[0].float(), -1)
    no_speech = float(logprobs[prompt.index(tokens.sot), tokens.no_speech].exp()) if tokens.no_speech is not None \
        else 0.0
    targets = torch.tensor(full[len(prompt):], device=logprobs.device)
    picked = logprobs[len(prompt) - 1:len(full) - 1].gather(1, targets[:, None])
    return no_speech, float(picked.sum()) / max(1, len(targets))


def transcribe(model: Whisper, tokenizer, audio, language: str | None = None, task: str = "transcribe",
               timestamps: bool = False, max_new_tokens: int | None = None) -> str:
    """The text spoken in `audio` (a path, a file's bytes, or 16 kHz samples), decoded greedily."""
    eot = WhisperTokens.from_tokenizer(tokenizer).eot
    text_tokens: list[int] = []
    for w in decode_windows(model, tokenizer, audio, language, task, timestamps, max_new_tokens):
        text_tokens += [t for t in w.tokens if t < eot]
    return tokenizer.decode(text_tokens).strip()


def window_segments(w: Window, tokenizer, tokens: WhisperTokens) -> list[tuple[float, float, list[int]]]:
    """(start s, end s, text tokens) of the segments of one window, as whisper's transcribe cuts them: at each
    pair of consecutive timestamps; text after the last closed segment is left for the next window (which
    starts there). Without timestamps, the window is one segment."""
    offset = w.seek * HOP_LENGTH / SAMPLE_RATE
    seq, tb = w.tokens, tokens.timestamp_begin
    is_ts = [t >= tb for t in seq]
    closed = [i for i in range(1, len(seq)) if is_ts[i - 1] and is_ts[i]]
    text = lambda part: [t for t in part if t < tokens.eot]  # noqa: E731
    if closed:
        cuts = closed + ([len(seq)] if is_ts[-2:] == [False, True] else [])
        out, last = [], 0
        for cut in cuts:
            part = seq[last:cut]
            out.append((offset + (part[0] - tb) * SECONDS_PER_TIMESTAMP,
                        offset + (part[-1] - tb) * SECONDS_PER_TIMESTAMP, text(part)))
            last = cut
        return out
    duration = w.size * HOP_LENGTH / SAMPLE_RATE
    stamps = [t for t in seq if t >= tb]
    if stamps and stamps[-1] != tb:  # a single closing timestamp
        duration = (stamps[-1] - tb) * SECONDS_PER_TIMESTAMP
    return [(offset, offset + duration, text(seq))]
