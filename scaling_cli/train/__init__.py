"""Training one run: schedule, optimizer, loop, evaluation, checkpoints, divergence detection."""
