#!/usr/bin/env python3
"""transformers side of the GPU family tests (test/gpu/run.sh, stage families).

  torch_families.py make W    for each variant: a random model made by transformers (LlamaForCausalLM,
                              GPTNeoXForCausalLM, GPTJForCausalLM) saved with save_pretrained into W/<v>/model, a
                              batch W/<v>/batch.i32 (inputs | shifted targets with -100 masks) and W/<v>/meta.txt (B T);
                              W/variants.txt lists them. families_test then imports, tests and exports them.
  torch_families.py check W   transformers (fp32, eager attention, TF32 off, on the GPU) on the same weights and batch:
                              logits, loss and every gradient vs the cuda backend's dumps (fp32 and bf16 modes), and
                              the round trip: W/<v>/export (imported, fine-tuned on the GPU, exported by the engine)
                              loads with AutoModelForCausalLM and gives the engine's logits. Prints one JSON summary
                              per variant; exit code = number of failed checks.
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, GPTJConfig, GPTJForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM)

B, T, V, C, L, MAXT = 2, 64, 500, 128, 2, 128
COMMON = dict(vocab_size=V, bos_token_id=1, eos_token_id=2)

VARIANTS = {
    # GQA 4 query / 2 KV heads, head 32 (flash attention in bf16), untied head
    "llama": lambda: LlamaForCausalLM(LlamaConfig(
        hidden_size=C, intermediate_size=256, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=MAXT, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, **COMMON)),
    # tied, one KV head, head 64, Llama 3.1 rope scaling with a short original context so every band matters
    "llama_tied_llama3": lambda: LlamaForCausalLM(LlamaConfig(
        hidden_size=C, intermediate_size=192, num_hidden_layers=L, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=MAXT, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=16), **COMMON)),
    # head 16: the unfused (cuBLAS + softmax) attention path in bf16 too
    "llama_hd16": lambda: LlamaForCausalLM(LlamaConfig(
        hidden_size=C, intermediate_size=256, num_hidden_layers=L, num_attention_heads=8, num_key_value_heads=4,
        max_position_embeddings=MAXT, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, **COMMON)),
    # Pythia: partial rotary 25%, parallel residual, erf GELU, untied embed_out
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(
        hidden_size=C, intermediate_size=4 * C, num_hidden_layers=L, num_attention_heads=4, rotary_pct=0.25,
        rotary_emb_base=10000, max_position_embeddings=MAXT, layer_norm_eps=1e-5, use_parallel_residual=True,
        hidden_act="gelu", tie_word_embeddings=False, **COMMON)),
    # sequential residual, half rotary, no attention biases
    "gpt_neox_sequential": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(
        hidden_size=C, intermediate_size=2 * C, num_hidden_layers=L, num_attention_heads=4, rotary_pct=0.5,
        rotary_emb_base=10000, max_position_embeddings=MAXT, layer_norm_eps=1e-5, use_parallel_residual=False,
        attention_bias=False, hidden_act="gelu", tie_word_embeddings=False, **COMMON)),
    # GPT-J: interleaved rotary on 16 of 32 head dims, one LayerNorm for both branches, lm_head with bias
    "gptj": lambda: GPTJForCausalLM(GPTJConfig(
        n_embd=C, n_layer=L, n_head=4, rotary_dim=16, n_positions=MAXT, n_inner=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False, **COMMON)),
}


def eager(model):
    try:
        model.set_attn_implementation("eager")
    except Exception:  # noqa: BLE001
        model.config._attn_implementation = "eager"
    return model


def hf_param(params, name):
    """The transformers parameter for an engine tensor name (GPT-NeoX's head is embed_out or lm_head by version)."""
    if name in params:
        return params[name]
    for a, b in (("embed_out.", "lm_head."), ("lm_head.", "embed_out.")):
        if name.startswith(a) and b + name[len(a):] in params:
            return params[b + name[len(a):]]
    raise KeyError(f"{name} (transformers has {sorted(params)[:4]}...)")


def make(W):
    os.makedirs(W, exist_ok=True)
    for name, build in VARIANTS.items():
        d = os.path.join(W, name)
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(1234)
        model = build().float()
        with torch.no_grad():  # every tensor should matter: non-trivial norm gains and biases, wider matrices
            for _, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
                else:
                    p.mul_(2.0)
        model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
        g = torch.Generator().manual_seed(99)
        ids = torch.randint(0, V, (B, T + 1), generator=g)
        inputs, targets = ids[:, :T].clone(), ids[:, 1:].clone()
        targets[torch.rand((B, T), generator=g) < 0.15] = -100
        targets[1, : T // 4] = -100
        np.concatenate([inputs.numpy().ravel(), targets.numpy().ravel()]).astype(np.int32).tofile(os.path.join(d, "batch.i32"))
        with open(os.path.join(d, "meta.txt"), "w") as f:
            f.write(f"{B} {T}\n")
    with open(os.path.join(W, "variants.txt"), "w") as f:
        f.write("\n".join(VARIANTS) + "\n")
    print(f"made {len(VARIANTS)} models in {W} (transformers {__import__('transformers').__version__}, torch {torch.__version__})")


def check(W):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fails = 0
    for name in open(os.path.join(W, "variants.txt")).read().split():
        d = os.path.join(W, name)
        res = {"variant": name}
        try:
            model = AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), attn_implementation="eager").float().cuda()
            raw = np.fromfile(os.path.join(d, "batch.i32"), dtype=np.int32)
            inputs = torch.from_numpy(raw[: B * T].reshape(B, T)).long().cuda()
            targets = torch.from_numpy(raw[B * T:].reshape(B, T)).long().cuda()
            out = model(input_ids=inputs)
            logits = out.logits.float()
            loss = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
            model.zero_grad()
            loss.backward()
            ref = logits.detach().cpu().numpy().ravel()
            layout = json.load(open(os.path.join(d, "layout.json")))
            params = dict(model.named_parameters())
            for prec, tol_logit, tol_loss, tol_cos in (("fp32", 1e-4, 1e-5, 0.9999), ("bf16", 1e-2, 1e-2, 0.99)):
                ours = np.fromfile(os.path.join(d, f"ours_{prec}_logits.f32"), dtype=np.float32)
                ol = float(np.fromfile(os.path.join(d, f"ours_{prec}_loss.f64"), dtype=np.float64)[0])
                grads = np.fromfile(os.path.join(d, f"ours_{prec}_grads.f32"), dtype=np.float32)
                maxabs = float(np.abs(ours - ref).max())
                rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
                lrel = abs(ol - loss.item()) / loss.item()
                worst, wname = 2.0, ""
                for t in layout:
                    g = hf_param(params, t["name"]).grad.detach().float().cpu().numpy().ravel()
                    o = grads[t["offset"]: t["offset"] + t["numel"]].astype(np.float64)
                    cs = float(np.dot(o, g) / (np.linalg.norm(o) * np.linalg.norm(g) + 1e-30)) if np.any(g) or np.any(o) else 1.0
                    if cs < worst:
                        worst, wname = cs, t["name"]
                ok_logit = (maxabs < tol_logit) if prec == "fp32" else (rel < tol_logit)
                ok = ok_logit and lrel < tol_loss and worst >= tol_cos
                fails += not ok
                res[prec] = dict(ok=ok, logits_max_abs=maxabs, logits_rel_l2=rel, loss_ours=ol, loss_torch=loss.item(),
                                 loss_rel=lrel, min_grad_cosine=worst, worst_tensor=wname)
            # round trip: the engine's export loads in transformers and gives the engine's logits
            exp = os.path.join(d, "export")
            em = AutoModelForCausalLM.from_pretrained(exp, attn_implementation="eager").float().cuda()
            with torch.no_grad():
                el = em(input_ids=inputs).logits.float().cpu().numpy().ravel()
            ours = np.fromfile(os.path.join(d, "ours_export_logits.f32"), dtype=np.float32)
            changed = float(np.abs(el - ref).max())
            m = float(np.abs(el - ours).max())
            ok = m < 1e-4 and changed > 1e-3
            fails += not ok
            res["round_trip"] = dict(ok=ok, cls=type(em).__name__, logits_max_abs=m, changed_vs_initial=changed)
        except Exception as e:  # noqa: BLE001
            fails += 1
            res["error"] = repr(e)[:800]
        print(json.dumps(res), flush=True)
    print(f"torch_families check: {fails} failed")
    return fails


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        raise SystemExit("usage: torch_families.py make|check W")
    sys.exit(make(sys.argv[2]) if sys.argv[1] == "make" else min(check(sys.argv[2]), 100))
