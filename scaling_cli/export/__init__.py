"""Proxies out of scaling-cli: transformers checkpoints (hf.py) read from run folders (runs.py)."""
