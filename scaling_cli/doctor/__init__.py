"""`scaling-cli doctor`: first contact with a machine, before a sweep trusts it.

On a GPU (<= 3 minutes, `--budget-s`): versions (machine.py); the fused loss against its fp32
oracle at 4 awkward shapes, forward and gradients, every backward scheme (kernel_checks.py; a
failure is kept in the plan cache, and sweeps on this GPU then train on the torch path); each
backward scheme, torch.compile's loss and the 3-matmul floor timed at the shapes the GPU default
(sweeps/small.yaml) trains, the fastest scheme kept as this GPU's measured plan (timing.py); a
20-step probe of one pack against the plain compiled model, with the memory planner's estimate
against the measured peak (probe.py). On a CPU: versions, the reference check under the Triton
interpreter at small shapes and of the torch path, the planner's plans for the GPU default's
shapes (default_shapes.py) and the plan cache's state; what needs a GPU is listed, not run.
run.py puts it together into one JSON; report.py prints the short table.
"""
