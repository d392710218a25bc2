"""Task kinds: how each kind reads labels, encodes, predicts and scores."""
