"""`scaling-cli export RUN [OUT] --format hf`: a finished proxy as a transformers checkpoint."""

from __future__ import annotations

import argparse

HELP = """Write a finished run's model as a transformers-native checkpoint (config.json,
model.safetensors and the tokenizer), loadable with AutoModelForCausalLM / AutoTokenizer
.from_pretrained(OUT) and no custom code. The proxy maps onto the transformers class that
computes the same function (Llama, Qwen3, Arcee, Apertus or VaultGemma, by MLP, qk-norm and
soft-cap); the export checks that class's logits against the proxy's before writing."""

EXAMPLES = """examples:
  scaling-cli export runs/3f2a9c1b0d4e5f60              # a run folder -> ./3f2a9c1b0d4e5f60-hf
  scaling-cli export 3f2a hf/small --store runs         # a run id prefix in a store"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a finished run as a transformers checkpoint",
                                   description=HELP, epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a run folder, or a run id (or unique prefix) in --store")
    parser.add_argument("out", metavar="OUT", nargs="?", help="output folder (default: ./RUN_ID-hf); must not exist")
    parser.add_argument("--format", choices=["hf"], default="hf", help="checkpoint format (hf: transformers)")
    parser.add_argument("--store", default="runs", help="store root that RUN ids refer to (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from scaling_cli.errors import UserError
    from scaling_cli.export.hf import save_hf, target_for
    from scaling_cli.export.runs import load_run

    loaded = load_run(args.run, args.store)
    target_for(loaded.model.cfg)  # refuse an architecture without a twin before any slow work
    out = Path(args.out or f"{loaded.run_id}-hf")
    if out.exists():
        if not args.overwrite:
            raise UserError(f"OUT: {out} exists; choose another folder or pass --overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = save_hf(loaded.model, loaded.tokenizer(), out)
    print(f"exported run {loaded.run_id} as {result['class']} to {out} "
          f"(max |logit difference| vs the proxy {result['max_logit_diff']:.2g})")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r}); AutoTokenizer.from_pretrained({str(out)!r})")
    return 0
