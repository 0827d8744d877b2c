"""Playing live: ports, the listener, the engine loop, the scheduler, modes (continuous,
duet), knobs, the recording and the session that ties their threads together."""
