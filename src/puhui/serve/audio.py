"""The OpenAI audio routes: POST /v1/audio/transcriptions and /v1/audio/translations (multipart uploads, to a
Whisper model) and POST /v1/audio/speech (JSON, to a Piper voice; the audio streamed a sentence at a time).

Uploads may be up to 25 MiB (create_app's max_audio_body; OpenAI takes files up to 25 MB): BodyLimitMiddleware
gives these two routes that limit, the JSON routes keep theirs. Form fields are checked like JSON bodies: an
unknown one is a 400 that names it, and OpenAI's fields that puhui does not implement are refused unless they
ask for nothing.
"""
from __future__ import annotations

import logging
from typing import Annotated, Literal, Optional, Union

from fastapi import APIRouter, Form, Request, Security, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import PuhuiError
from .auth import bearer
from .errors import APIError, from_puhui, unsupported
from .deps import ERRORS, served_models
from .schemas import Closed, Text

log = logging.getLogger("puhui.serve")

UPLOAD_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
MAX_SPEECH_INPUT = 4096            # characters (OpenAI's limit)
# OpenAI's voices: a single-speaker voice model speaks every one of them with its own voice
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
PCM_RATE = 24000                   # OpenAI's pcm: 24 kHz 16-bit signed little-endian mono

router = APIRouter(prefix="/v1/audio", dependencies=[Security(bearer)], responses=ERRORS, tags=["audio"])

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
_TEXT_RESPONSES = {200: {"content": {"application/json": {"schema": {"type": "object"}},
                                     "text/plain": {"schema": {"type": "string"}}},
                         "description": "json / verbose_json: an object; text, srt, vtt: text."}}


class _Upload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file: UploadFile = Field(..., description="The audio file: wav, flac, ogg, mp3 ... (up to 25 MiB).")
    model: str = Field(..., description="A transcription model served here, e.g. whisper-1 (see GET /v1/models).")
    prompt: Optional[str] = Field(None, description="Text that comes before the audio (a style or spelling hint).")
    response_format: ResponseFormat = Field("json", description="json, text, srt, verbose_json or vtt.")
    temperature: float = Field(0.0, ge=0, le=1, description="0: greedy, with fallback to higher temperatures "
                                                            "on a failed window.")


class TranscriptionForm(_Upload):
    language: Optional[str] = Field(None, description="The spoken language (ISO 639-1, e.g. en); default: "
                                                      "detected.")
    timestamp_granularities: Optional[list[Literal["word", "segment"]]] = Field(
        None, alias="timestamp_granularities[]", description="word and/or segment (verbose_json only).")
    stream: Optional[bool] = Field(None, description="Not implemented: only false.")
    chunking_strategy: Optional[str] = Field(None, description="Not implemented.")
    include: Optional[list[str]] = Field(None, alias="include[]", description="Not implemented.")
    known_speaker_names: Optional[list[str]] = Field(None, alias="known_speaker_names[]",
                                                     description="Not implemented.")
    known_speaker_references: Optional[list[str]] = Field(None, alias="known_speaker_references[]",
                                                          description="Not implemented.")


class TranslationForm(_Upload):
    pass


class VoiceId(Closed):
    id: str


class SpeechRequest(Closed):
    model: str = Field(..., description="A voice model served here, e.g. tts-1 (see GET /v1/models).")
    input: Text = Field(..., min_length=1, max_length=MAX_SPEECH_INPUT, description="The text to speak.")
    voice: Union[str, VoiceId] = Field(..., description="One of OpenAI's voice names (a single-speaker model "
                                                        "speaks them all with its own voice) or the model's name.")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "ogg"] = Field(
        "mp3", description="mp3, opus, aac, flac, wav, pcm (24 kHz 16-bit little-endian, no header) or ogg "
                           "(Vorbis); one this server cannot encode is a 400 that names it.")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="0.25 to 4.0.")
    instructions: Optional[str] = Field(None, description="Not implemented: only empty.")
    stream_format: Optional[Literal["sse", "audio"]] = Field(None, description="Only audio: the bytes as they "
                                                                                "are made.")


# ---------------------------------------------------------------------------------------------- speech to text

@router.post("/transcriptions", response_model=None, responses=_TEXT_RESPONSES,
             summary="Transcribe audio into text in its language")
async def transcriptions(form: Annotated[TranscriptionForm, Form()], request: Request):
    worker = served_models(request).worker(form.model, "transcription", "/v1/audio/transcriptions")
    if form.stream:
        raise unsupported("stream", "the transcript comes whole")
    for name in ("chunking_strategy", "include", "known_speaker_names", "known_speaker_references"):
        if getattr(form, name):
            raise unsupported(name)
    fmt = form.response_format
    granularities = tuple(form.timestamp_granularities or ())
    if granularities and fmt != "verbose_json":
        raise APIError(400, "timestamp_granularities[] needs response_format verbose_json",
                       param="timestamp_granularities[]", code="invalid_value")
    if fmt == "verbose_json" and not granularities:
        granularities = ("segment",)
    timestamps = "word" if "word" in granularities else "segment" if fmt in ("verbose_json", "srt", "vtt") else None
    try:
        worker.model.check_language(form.language)
    except PuhuiError as e:
        raise from_puhui(e, param="language") from None
    data = await _upload(form.file)
    result = await worker.run(lambda asr: asr.transcribe(
        _samples(asr, data, form.file.filename), language=form.language, timestamps=timestamps, prompt=form.prompt,
        temperature=form.temperature))
    return _answer(result, fmt, granularities)


@router.post("/translations", response_model=None, responses=_TEXT_RESPONSES,
             summary="Translate audio into English text (multilingual models)")
async def translations(form: Annotated[TranslationForm, Form()], request: Request):
    worker = served_models(request).worker(form.model, "transcription", "/v1/audio/translations")
    if not getattr(worker.model, "multilingual", False):
        raise APIError(400, f"translation is not available with {worker.name!r}: it is an English-only model; "
                            f"translating into English needs a multilingual Whisper (e.g. whisper-base)",
                       param="model", code="translation_unavailable")
    fmt = form.response_format
    timestamps = "segment" if fmt in ("verbose_json", "srt", "vtt") else None
    data = await _upload(form.file)
    result = await worker.run(lambda asr: asr.translate(
        _samples(asr, data, form.file.filename), timestamps=timestamps, prompt=form.prompt, temperature=form.temperature))
    return _answer(result, fmt, ("segment",))


async def _upload(file: UploadFile) -> bytes:
    data = await file.read()
    if not data:
        raise APIError(400, f"the uploaded file {file.filename or ''!r} is empty: no audio", param="file",
                       code="invalid_file")
    return data


def _samples(asr, data: bytes, filename: str | None):
    """16 kHz samples of the upload (on the worker thread); a file that is not audio is a 400 naming it."""
    try:
        return asr.read(data)
    except PuhuiError as e:
        err = from_puhui(e, param="file")
        err.message = err.message.replace("the audio bytes", f"the uploaded file {filename or ''!r}")
        err.code = "invalid_file"
        raise err from None


def _answer(result, fmt: str, granularities) -> Response:
    body = result.format(fmt, granularities)
    if fmt in ("json", "verbose_json"):
        return Response(body, media_type="application/json")
    return Response(body, media_type="text/plain; charset=utf-8")


# ---------------------------------------------------------------------------------------------- text to speech

@router.post("/speech", response_class=StreamingResponse, summary="Speak text: the audio bytes, streamed",
             responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}} for t in
                                          ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav",
                                           "audio/pcm")},
                              "description": "The audio, sent a sentence at a time as it is synthesised."}})
async def speech(body: SpeechRequest, request: Request):
    worker = served_models(request).worker(body.model, "speech", "/v1/audio/speech")
    if body.instructions:
        raise unsupported("instructions", "the voice cannot be directed")
    if body.stream_format == "sse":
        raise unsupported("stream_format", "only audio (the bytes themselves) is sent")
    voice = body.voice.id if isinstance(body.voice, VoiceId) else body.voice
    if voice not in OPENAI_VOICES and voice not in (worker.name, body.model):
        raise APIError(400, f"voice {voice!r}: use one of {', '.join(OPENAI_VOICES)} (model {worker.name!r} has one "
                            f"speaker and speaks each with it) or {worker.name!r}", param="voice",
                       code="invalid_value")
    fmt = body.response_format
    try:
        media_type = worker.model.media_type(fmt)
    except PuhuiError as e:
        raise from_puhui(e, param="response_format") from None
    rate = PCM_RATE if fmt == "pcm" else None
    chunks = None

    def start(voice_model):
        nonlocal chunks
        chunks = voice_model.encoded(body.input, fmt, body.speed, sample_rate=rate)
        try:
            return next(chunks, b"")
        except PuhuiError as e:      # the Voice's "text" is this route's "input"
            raise from_puhui(e, param="input" if e.param in (None, "text") else None) from None

    first = await worker.run(start)    # a text with nothing to say fails here, as a 400 (code nothing_to_say)

    async def audio():
        yield first
        while True:
            try:
                data = await worker.run(lambda _: next(chunks, None))
            except APIError:   # the server is draining, or the call timed out: the audio ends here
                return
            except Exception:  # noqa: BLE001 - the status is sent: end the stream, and say why in the log
                log.exception("speech synthesis failed mid-stream for %s", worker.name)
                return
            if data is None:
                return
            yield data

    headers = {"X-Sample-Rate": str(rate or (48000 if fmt == "opus" else worker.model.sample_rate))}
    return StreamingResponse(audio(), media_type=media_type, headers=headers)
