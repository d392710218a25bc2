"""Settings, the plan, the runner and its executors (local, Ray), the shift measurement."""
