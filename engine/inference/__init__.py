"""Model contracts, ONNX Runtime and TensorRT runners, the engine cache, batching."""
