# PyTorch peer for bench/cpu_adam.cpp: torch.optim.AdamW(fused=True) on CPU fp32 tensors of the same total size,
# on the same cores (torch.get_num_threads(), from OMP_NUM_THREADS). Prints one JSON line.
#   python3 bench/cpu_adam_torch.py [n_elements] [steps]
import json, os, statistics, sys, time
import torch

n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1 << 28
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
if os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# GPT-2 1.5B-like split: a few big 2-D tensors (decayed) — fused AdamW processes the list in one kernel anyway
chunk = 1600 * 6400
sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
params = [torch.nn.Parameter(torch.rand(s, dtype=torch.float32) * 0.02) for s in sizes]
for p in params:
    p.grad = (torch.rand_like(p) - 0.5) * 2e-3
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
times = []
for s in range(steps + 1):
    t0 = time.perf_counter()
    opt.step()
    ms = (time.perf_counter() - t0) * 1e3
    if s:
        times.append(ms)
ms = statistics.median(times)
print(json.dumps({"variant": "torch.optim.AdamW(fused=True)", "n": n, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "median_ms": round(ms, 2), "Gelem_per_s": round(n / ms / 1e6, 3),
                  "GB_per_s": round(n * 28 / ms / 1e6, 1)}))

# What an offload step needs besides: the updated weights as bf16 for the upload (our fused variant writes them in
# the same pass). Torch: fused AdamW, then one bf16 copy per tensor into preallocated (pinned when CUDA exists) buffers.
outs = [torch.empty(s, dtype=torch.bfloat16, pin_memory=torch.cuda.is_available()) for s in sizes]
times = []
for s in range(steps + 1):
    t0 = time.perf_counter()
    opt.step()
    for o, p in zip(outs, params):
        o.copy_(p.detach())
    ms = (time.perf_counter() - t0) * 1e3
    if s:
        times.append(ms)
ms = statistics.median(times)
print(json.dumps({"variant": "torch.optim.AdamW(fused=True) + bf16 copy", "n": n, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "median_ms": round(ms, 2), "Gelem_per_s": round(n / ms / 1e6, 3),
                  "GB_per_s": round(n * 30 / ms / 1e6, 1)}))
