"""Parity of the cuda backend with PyTorch + transformers on the GPU (same weights, same inputs).

Reads the files cuda_backend_test wrote into OUTDIR:
  p124_*    GPT-2 124M shape, one batch (B=4, T=256): our loss and gradients in fp32 and bf16 modes
  curve_*   the tiny model's initial weights and the exact 50 x 2 micro-batches the engine trained on, and our
            loss curves (curves.json)
and checks: loss within 1e-2 relative (bf16) / 1e-4 (fp32), per-tensor gradient cosine >= 0.99 (bf16) /
0.9999 (fp32), and that HF trained with the same AdamW / schedule / clipping tracks our 50-step curves.
Prints 'N passed, M failed' last; exit code 1 on any failure. Usage: python3 torch_parity.py OUTDIR
"""
import json, math, os, sys
import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
out = sys.argv[1]
passed = failed = 0


def report(ok, msg):
    global passed, failed
    print(f"  [{'ok' if ok else 'FAIL'}] {msg}", flush=True)
    if ok:
        passed += 1
    else:
        failed += 1


def model_for(L, NH, C, P, V=50257):
    cfg = GPT2Config(n_layer=L, n_head=NH, n_embd=C, n_positions=P, vocab_size=V, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, layer_norm_epsilon=1e-5, activation_function="gelu_new")
    cfg._attn_implementation = "eager"
    return GPT2LMHeadModel(cfg).cuda().float()


def load_flat(model, flat):
    """Our flat layout is HF's named_parameters() order (tied lm_head not repeated), Conv1D (in, out) shapes."""
    off = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[off:off + n]).view_as(p))
            off += n
    assert off == flat.size, f"layout mismatch: {off} vs {flat.size}"


def loss_of(model, inp, tgt):
    logits = model(input_ids=inp).logits.float()
    n = (tgt != -100).sum()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1), ignore_index=-100, reduction="sum") / n


def rd(name, dtype):
    return np.fromfile(os.path.join(out, name), dtype=dtype)


# ---------------------------------------------------------------------------------------------- one step, 124M
print("PyTorch parity, GPT-2 124M shape, B=4 T=256 (HF in fp32, TF32 off)")
B, T = 4, 256
m = model_for(12, 12, 768, 1024)
load_flat(m, rd("p124_params.f32", np.float32))
inp = torch.from_numpy(rd("p124_inputs.i32", np.int32).astype(np.int64)).view(B, T).cuda()
tgt = torch.from_numpy(rd("p124_targets.i32", np.int32).astype(np.int64)).view(B, T).cuda()
loss = loss_of(m, inp, tgt)
loss.backward()
ref_loss = loss.item()
for prec, ltol, ctol in (("fp32", 1e-4, 0.9999), ("bf16", 1e-2, 0.99)):
    ours = float(rd(f"p124_loss_{prec}.f64", np.float64)[0])
    g = torch.from_numpy(rd(f"p124_grads_{prec}.f32", np.float32)).cuda()
    rel = abs(ours - ref_loss) / ref_loss
    report(rel < ltol, f"{prec}: loss {ours:.6f} vs HF {ref_loss:.6f} (rel {rel:.2e}, tol {ltol:.0e})")
    off, worst, worst_name = 0, 1.0, ""
    for name, p in m.named_parameters():
        n = p.numel()
        a, b = g[off:off + n].double(), p.grad.reshape(-1).double()
        off += n
        if b.abs().sum() == 0:
            continue
        c = (a @ b / (a.norm() * b.norm() + 1e-30)).item()
        if c < worst:
            worst, worst_name = c, name
    report(worst >= ctol, f"{prec}: min per-tensor gradient cosine {worst:.6f} ({worst_name}), tol {ctol}")
del m

# ---------------------------------------------------------------------------------------------- 50-step curve
if not os.path.exists(os.path.join(out, "curves.json")):
    print("(no curves.json: cuda_backend_test's engine tests did not run; curve comparison skipped)")
    print(f"\n{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
print("50-step loss curve on tinyshakespeare, tiny GPT-2 (L=2 C=128), HF fp32 with the engine's AdamW settings")
steps, accum, B, T = 50, 2, 8, 64
lr0, warm, min_ratio, wd, clip = 1e-3, 5, 0.1, 0.1, 1.0
m = model_for(2, 4, 128, 128)
load_flat(m, rd("curve_init_params.f32", np.float32))
inp_all = torch.from_numpy(rd("curve_inputs.i32", np.int32).astype(np.int64)).view(steps * accum, B, T).cuda()
tgt_all = torch.from_numpy(rd("curve_targets.i32", np.int32).astype(np.int64)).view(steps * accum, B, T).cuda()
decay = [p for p in m.parameters() if p.dim() >= 2]
no_decay = [p for p in m.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=lr0, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step, total):  # native/engine/lr_schedule.h
    if warm > 0 and step < warm:
        return lr0 * (step + 1) / warm
    if total <= warm or step >= total:
        return lr0 * min_ratio
    prog = (step - warm) / (total - warm)
    return lr0 * min_ratio + 0.5 * (1 + math.cos(math.pi * prog)) * (lr0 - lr0 * min_ratio)


torch_curve = []
for s in range(steps):
    opt.zero_grad(set_to_none=True)
    n = sum(int((tgt_all[s * accum + a] != -100).sum()) for a in range(accum))
    total = 0.0
    for a in range(accum):
        logits = m(input_ids=inp_all[s * accum + a]).logits.float()
        l = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt_all[s * accum + a].view(-1), ignore_index=-100,
                            reduction="sum") / n
        l.backward()
        total += l.item()
    torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
    for gr in opt.param_groups:
        gr["lr"] = lr_at(s, steps)
    opt.step()
    torch_curve.append(total)
curves = json.load(open(os.path.join(out, "curves.json")))
curves["torch_fp32"] = torch_curve
json.dump(curves, open(os.path.join(out, "curves.json"), "w"))
for k, tol in (("cpu", 1e-3), ("cuda_fp32", 1e-3), ("cuda_bf16", 3e-2)):
    d = max(abs(a - b) / b for a, b in zip(curves[k], torch_curve))
    report(d < tol, f"{k} vs HF: max rel diff over 50 steps {d:.2e} (tol {tol:.0e}); last {curves[k][-1]:.4f} vs {torch_curve[-1]:.4f}")
print(f"\n{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
