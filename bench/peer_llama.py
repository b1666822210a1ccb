"""Peer baseline for the model-family benchmark (bench/train_gpu.sh): Hugging Face LlamaForCausalLM (or
GPTNeoXForCausalLM) + torch.compile on one GPU, fp32 master weights + bf16 autocast (mixed precision as in the HF
Trainer / DeepSpeed), fused AdamW, gradient clipping at 1.0, SDPA attention. Same shapes as bench/families_gpu.cpp.
Random init (no hub access); the compute is the same as for pretrained weights.

Prints one JSON line: tokens/s, ms/step (median), MFU (6N + 12*L*d*T flops per token, 989 TFLOP/s bf16 dense
peak), peak GPU memory (torch.cuda.max_memory_allocated).
Style and conventions of the GPT-2 peer, bench/peer_torch.py (which has no Llama).
"""
import argparse
import json
import time

import torch


def build(name):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
    if name == "llama-1b":  # Llama-3.2-1B shape
        cfg = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                          intermediate_size=8192, vocab_size=128256, max_position_embeddings=4096, rms_norm_eps=1e-5,
                          rope_theta=500000.0, tie_word_embeddings=True,
                          rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                            original_max_position_embeddings=8192))
        cls, L, d = LlamaForCausalLM, 16, 2048
    elif name in ("pythia-1b", "pythia-410m"):
        big = name == "pythia-1b"
        cfg = GPTNeoXConfig(hidden_size=2048 if big else 1024, num_hidden_layers=16 if big else 24,
                            num_attention_heads=8 if big else 16, intermediate_size=8192 if big else 4096,
                            vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True,
                            hidden_act="gelu", tie_word_embeddings=False)
        cls, L, d = GPTNeoXForCausalLM, cfg.num_hidden_layers, cfg.hidden_size
    else:
        raise SystemExit(f"unknown model {name}")
    cfg.use_cache = False
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        m = cls(cfg).float()
    return m, L, d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-1b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    model, L, d = build(a.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    fwd = model if a.no_compile else torch.compile(model)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, 50000, (a.batch, a.seq), generator=g).cuda()
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]
    tps = a.batch * a.seq / dt
    fpt = 6 * n_params + 12 * L * d * a.seq
    print(json.dumps({
        "peer": "torch-" + ("eager" if a.no_compile else "compile"), "model": a.model, "params_M": round(n_params / 1e6, 1),
        "seq": a.seq, "batch": a.batch, "master_fp32": True, "ms_per_step": round(dt * 1000, 1),
        "tokens_per_s": round(tps), "mfu": round(tps * fpt / 989e12, 4),
        "peak_gpu_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2), "loss": round(out.loss.item(), 3),
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
