"""Export to transformers (scaling_cli/export/): for every proxy variant, the checkpoint that
`save_hf` writes loads with AutoModelForCausalLM / AutoTokenizer (no custom code) and gives our
logits (fp32, CPU) and our greedy decode; variants without a twin are refused in one line; a run
trained by a 1-second sweep round-trips through `scaling-cli export`.

    pytest tests/test_export.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from scaling_cli.cli import main
from scaling_cli.config import ModelConfig
from scaling_cli.data.tokenizer import EOS, train_bpe
from scaling_cli.errors import UserError
from scaling_cli.evals.choice import _read_jsonl, shipped_tasks
from scaling_cli.evals.generate import greedy_generate
from scaling_cli.export.hf import check_logits, save_hf, to_hf
from scaling_cli.export.runs import load_run
from scaling_cli.model.gpt import GPT
from scaling_cli.store import RunStore

MODEL_CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
# Tiny shapes of each family's architecture; μP at twice its base width so its multipliers are not 1.
SHAPE = dict(d_model=64, n_layer=2, n_head=2, seq_len=40, vocab_size=320, mup_base_width=32, init_std=0.2)
VOCAB = SHAPE["vocab_size"]


def family(name: str, **overrides) -> ModelConfig:
    """conf/model/<name>.yaml's architecture at the tiny SHAPE."""
    arch = OmegaConf.to_container(OmegaConf.load(MODEL_CONF / f"{name}.yaml"))
    return ModelConfig(**{**arch, **SHAPE, **overrides})


def proxy(cfg: ModelConfig, seed: int = 0) -> GPT:
    """A randomly initialised proxy whose norm gains are not all one, so folding them is tested."""
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.mul_(torch.empty_like(param).uniform_(0.5, 1.5))
    return model


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r["context"] for r in _read_jsonl(shipped_tasks()["next_verse"])[:400]]
    return train_bpe(texts, VOCAB)


PLAIN = {"parametrization": "standard", "tied_embeddings": True}
UNTIED = {"parametrization": "standard", "tied_embeddings": False}
MUP = {"parametrization": "mup", "tied_embeddings": False}  # μP needs an untied output layer

VARIANTS = [
    pytest.param(fam, {**kind, "qk_layernorm": qk}, expected, id=f"{fam}-{label}-{'qk' if qk else 'noqk'}")
    for fam, classes in (("tiny", ("ArceeForCausalLM", "ApertusForCausalLM")),
                         ("gpt_small", ("LlamaForCausalLM", "Qwen3ForCausalLM")))
    for label, kind in (("tied", PLAIN), ("untied", UNTIED), ("mup", MUP))
    for qk, expected in ((False, classes[0]), (True, classes[1]))
] + [
    pytest.param("gpt_small", {**kind, "logit_softcap": 15.0}, "VaultGemmaForCausalLM", id=f"gpt_small-{label}-softcap")
    for label, kind in (("tied", PLAIN), ("mup", MUP))
]


@pytest.mark.parametrize("fam, overrides, expected", VARIANTS)
def test_exported_checkpoint_gives_our_logits_and_greedy_decode(fam, overrides, expected, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = family(fam, **overrides)
    model = proxy(cfg)
    info = save_hf(model, tokenizer, tmp_path / "hf")
    assert info["class"] == expected
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert type(hf).__name__ == expected and hf.config.tie_word_embeddings == cfg.tied_embeddings

    idx = torch.randint(0, VOCAB, (2, cfg.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(input_ids=idx).logits
    ours = model.logits(idx)
    assert ours.abs().max() > 1.0  # logits far from uniform: the comparison is not trivially met
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    prompt = tok("Y dijo Dios: Sea la luz").input_ids
    expect = greedy_generate(model, [prompt], 20, eos_id=tok.eos_token_id)[0]
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    got = out[:out.index(tok.eos_token_id)] if tok.eos_token_id in out else out
    assert expect and got == expect


@pytest.mark.parametrize("overrides, variant", [
    ({"mlp": "gelu", "logit_softcap": 30.0}, "model.mlp=gelu"),
    ({"mlp": "swiglu", "qk_layernorm": True, "logit_softcap": 30.0}, "model.qk_layernorm=true"),
])
def test_a_variant_without_a_transformers_twin_is_refused_in_one_line(overrides, variant):
    with pytest.raises(UserError) as err:
        to_hf(proxy(family("tiny", **overrides)))
    message = str(err.value)
    assert "\n" not in message and variant in message and "model.logit_softcap=30" in message


def test_a_converted_model_that_differs_from_the_proxy_is_caught():
    model = proxy(family("gpt_small"))
    hf = to_hf(model, verify=False)
    assert check_logits(model, hf) < 1e-4
    with torch.no_grad():
        hf.model.layers[1].mlp.up_proj.weight.mul_(1.01)  # a 1% mapping error in one matrix
    with pytest.raises(RuntimeError, match="does not reproduce the proxy"):
        check_logits(model, hf)


def test_export_cli_round_trips_a_trained_run(tiny_overrides, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["sweep", "--no-progress", *tiny_overrides]) == 0
    store = tmp_path / "runs"
    (run_id,) = RunStore(str(store)).run_ids()
    out = tmp_path / "exported"
    assert main(["export", run_id[:5], str(out), "--store", str(store), "--format", "hf"]) == 0
    assert "ArceeForCausalLM" in capsys.readouterr().out  # tiny: GELU MLP, no qk-norm

    run = load_run(str(store / run_id))
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    idx = torch.randint(0, run.model.cfg.vocab_size, (2, run.model.cfg.seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, run.model.logits(idx), atol=1e-4, rtol=0)
    text = "En el principio creó Dios los cielos y la tierra."
    assert tok(text).input_ids == run.tokenizer()(text, add_special_tokens=False).input_ids
    assert tok.eos_token == tok.bos_token == tok.pad_token == EOS and tok.model_max_length == run.model.cfg.seq_len
    assert hf.generation_config.eos_token_id == tok.eos_token_id
    # Readable alike by transformers 4 and 5: RoPE under both spellings, a tokenizer class both know.
    config = json.loads((out / "config.json").read_text())
    theta = run.model.cfg.rope_theta
    assert config["rope_theta"] == theta and config["rope_scaling"] is None
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": theta}
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"

    assert main(["export", str(store / run_id), str(out)]) == 2  # OUT exists: refused, first export intact
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").exists()
    assert main(["export", "zzz", "--store", str(store)]) == 2
    assert "no run 'zzz'" in capsys.readouterr().err
    (store / run_id / "model.pt").unlink()
    assert main(["export", run_id, str(tmp_path / "again"), "--store", str(store)]) == 2
    assert "only a finished run" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_exporter_imports_no_training_code():
    code = ("import sys, scaling_cli.commands.export, scaling_cli.export.hf, scaling_cli.export.runs; "
            "print(' '.join(m for m in sys.modules if m.startswith(('scaling_cli.train', 'scaling_cli.fit', "
            "'scaling_cli.launch', 'scaling_cli.worker', 'scaling_cli.packs'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
