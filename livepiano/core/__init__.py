"""Pure building blocks: the performance vocabulary and MIDI <-> tokens, MIDI files from
disk, MIDI messages, voices. No threads, no ports, no settings."""
