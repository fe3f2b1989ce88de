"""The loss-kernel shapes the GPU default (sweeps/small.yaml) trains, and the plans the planner
makes for them.

The sweep's runs are grouped into packs exactly as `scaling-cli sweep` groups them
(scaling_cli.packs.make_packs, sized from free GPU memory); each architecture's largest pack is
one loss shape: K heads (members) x batch x seq_len tokens, its d, V and soft-cap. Without a GPU
the packs are sized for an assumed 80 GiB of free memory and the plans for an assumed 132 SMs
(an H100 SXM), and say so.
"""

from __future__ import annotations

import torch

from scaling_cli.plan import RunSpec

ASSUMED_FREE_BYTES = 80 << 30
ASSUMED_SMS = 132


def gpu_default_packs(free_bytes: int | None) -> list[list[RunSpec]]:
    """The GPU default's packs (largest first) for `free_bytes` of GPU memory (None: the assumption)."""
    from scaling_cli.compose import GPU_DEFAULT_SWEEP, compose
    from scaling_cli.packs import make_packs
    from scaling_cli.plan import expand

    cfg = compose([f"sweep={GPU_DEFAULT_SWEEP}"])
    return make_packs(expand(cfg), cfg.launcher, free_bytes if free_bytes is not None else ASSUMED_FREE_BYTES)


def loss_shapes(packs: list[list[RunSpec]]) -> list[dict]:
    """One shape per architecture, from its largest pack: arch, heads, tokens per head, dim, vocab,
    softcap, and the pack's run ids."""
    shapes: dict[tuple, dict] = {}
    for pack in packs:
        model, train = pack[0].config["model"], pack[0].config["train"]
        arch = (model["d_model"], model["n_layer"])
        if arch not in shapes or len(pack) > shapes[arch]["heads"]:
            shapes[arch] = {"arch": f"d{model['d_model']} L{model['n_layer']}", "heads": len(pack),
                            "tokens": train["batch_size"] * model["seq_len"], "dim": model["d_model"],
                            "vocab": model["vocab_size"], "softcap": model["logit_softcap"],
                            "runs": [s.run_id for s in pack]}
    return sorted(shapes.values(), key=lambda s: s["dim"])


def plans(shapes: list[dict], device: torch.device, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    """The forward and backward plans for each shape: on a GPU the ones its backward will follow
    (measured when the plan cache has the shape, else the default); elsewhere the planner's
    defaults for ASSUMED_SMS."""
    from scaling_kernels import lce_plan

    rows = []
    for shape in shapes:
        k, t, d, v = shape["heads"], shape["tokens"], shape["dim"], shape["vocab"]
        if device.type == "cuda":
            from scaling_kernels import lce_triton

            sms = lce_triton._num_sms(device)
            backward = lce_triton.shape_plan(k, t, d, v, dtype, device)
        else:
            sms = ASSUMED_SMS
            backward = lce_plan.plan_backward(k, t, d, v, dtype.itemsize, sms)
        forward = lce_plan.plan_forward(k, t, d, v, sms)
        workspace = lce_plan.workspace_bytes(forward, backward, k, t, d, v, dtype.itemsize)
        rows.append({**{key: shape[key] for key in ("arch", "heads", "tokens", "dim", "vocab")}, "sms": sms,
                     "sms_assumed": device.type != "cuda", "scheme": backward.scheme, "source": backward.source,
                     "forward_splits": forward.n_split, "resident": forward.resident,
                     "token_chunk": backward.token_chunk, "head_group": backward.head_group,
                     "workspace_mib": round(workspace / 2**20, 1)})
    return rows
