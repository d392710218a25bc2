"""Loading a dataset's splits from local copies (or the Hub), overlap checks, tokenization."""
