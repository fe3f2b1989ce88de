"""Ready-made sweeps: each YAML is a `sweep` group option (`scaling-cli sweep sweep=NAME`)."""
