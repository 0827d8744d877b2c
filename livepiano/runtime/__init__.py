"""Playing a trained model: the engine, its sampling policies, offline generation and scoring."""
