"""Audio: decoding to 16 kHz mono samples (io), Whisper's log-mel features (mel), speech to text (transcribe)."""
