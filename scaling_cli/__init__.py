"""scaling-cli: train small GPT proxies, fit scaling laws, predict big runs.

Data flow (one direction): config -> plan -> launch -> train -> store -> fit -> predict -> plots.
"""

__version__ = "0.1.0"
