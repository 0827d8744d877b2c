"""Pure building blocks: the performance vocabulary and MIDI <-> tokens, MIDI files from
disk, MIDI messages, voices, the built-in SoundFont synth. No threads, no ports, no settings."""
