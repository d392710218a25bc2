"""The fine-tuning loop, prediction, batching and resumable training state."""
