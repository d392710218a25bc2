"""The immutable run files and predictions: schema, atomic writes, reading."""
