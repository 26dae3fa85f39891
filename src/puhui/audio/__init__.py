"""Audio: decoding to 16 kHz mono samples (io), Whisper's log-mel features (mel), speech to text (transcribe),
transcripts and their formats (transcript, languages); text to phonemes (phonemes), Piper voices (piper) and
encoding to WAV, PCM, FLAC, Ogg, MP3, Opus, AAC (encode)."""
