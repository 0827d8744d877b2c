"""Training (torch lives only here): the token cache, the network, training, export to ONNX."""
