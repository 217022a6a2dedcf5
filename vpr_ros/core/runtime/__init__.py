"""Where and how descriptors run: torch, ONNX Runtime and TensorRT backends, export, devices."""
