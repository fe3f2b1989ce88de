"""Hydra config tree for scaling-cli (YAML that selects and overrides the dataclass schemas in scaling_cli.config)."""
