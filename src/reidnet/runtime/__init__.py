"""The model-file runtime: checkpoints and ONNX graphs as embedding backends, the one embedding
loop, retrieval metrics of embeddings, and the records every action writes. Evaluate, inference,
the Embedder and validation during training run on it; it knows nothing of training."""
