"""Training: photos -> PyTorch model -> exported, versioned ONNX classifier (never imported by
serving code; needs the ``train`` extra)."""
