"""The registries: datasets, pairs, suites, model aliases and protocols, read from YAML."""
