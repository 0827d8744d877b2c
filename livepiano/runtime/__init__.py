"""The model at play time through onnxruntime (no torch): the model file and card, the
``Engine`` that steps it, scoring and offline generation."""
