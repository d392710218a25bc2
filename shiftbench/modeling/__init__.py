"""Loading checkpoints (safetensors, GGUF), devices and precision, sentence embeddings."""
