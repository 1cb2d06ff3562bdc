"""What users touch: the config schema, the ``attune`` CLI, the runner, tracking and evaluation."""
