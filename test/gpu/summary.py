#!/usr/bin/env python3
"""Machine-readable summary of a GPU run (test/gpu/run.sh): one record per stage in OUT/summary.json, rewritten
after every stage so a run cut by its time limit still returns what finished.

  summary.py init    SUMMARY HOST GPUS JSON_INFO       start a summary (host, GPUs seen, setup facts)
  summary.py stage   SUMMARY NAME STATUS SECONDS LOGDIR [NOTE]
                     STATUS: pass | fail | timeout | skip (NOTE says why: not applicable, or no time left);
                     key numbers come from LOGDIR
  summary.py print   SUMMARY                           one line per stage
  summary.py verdict SUMMARY                           the speed gates; exit 1 when a stage or a gate failed

Key numbers are read from what the suites print: 'N passed, M failed' (cuda_backend_test, torch_parity,
families_test, zero_test), 'N check(s) failed' (kernels_check), 'N failure(s)' (offload tests), 'torch_families
check: N failed', every [FAIL]/FAIL line, and the JSON lines of the benchmarks (*.jsonl: ratios, tokens/s, memory).
"""
import glob
import json
import os
import re
import sys
import time

BENCH_KEYS = ("case", "model", "stage", "gpus", "offload", "batch", "accum", "delayed", "tokens_per_s", "ms_per_step",
              "ratio_tokens_per_s", "step_ratio", "ratio", "peak_GiB", "device_used_GiB", "host_peak_GiB", "error",
              "skipped", "projected_epoch_min (1426 steps)", "variant", "threads", "median_ms", "GB_per_s",
              "speedup_vs_reference", "check", "ok", "ours_offload_ms", "ours_none_ms", "ours_tokens_per_s",
              "peer_tokens_per_s", "target")


def load(path):
    with open(path) as f:
        return json.load(f)


def save(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def compact(obj):
    """The keys a reader compares across runs; nested ours/peer records flattened one level."""
    out = {k: obj[k] for k in BENCH_KEYS if k in obj}
    for side in ("ours", "peer"):
        if isinstance(obj.get(side), dict) and obj[side]:
            out[side] = {k: obj[side][k] for k in BENCH_KEYS if k in obj[side]}
    return out


def scan(logdir):
    """Counts, failing lines and benchmark records from every log under logdir."""
    counts, failures, bench, notes = {}, [], [], []
    files = sorted(glob.glob(os.path.join(logdir, "**", "*"), recursive=True))
    for p in files:
        if not os.path.isfile(p) or os.path.getsize(p) > 64 << 20:
            continue
        name = os.path.relpath(p, logdir)
        try:
            text = open(p, errors="replace").read()
        except OSError:
            continue
        if p.endswith(".jsonl"):
            if os.path.basename(p) in ("ours.jsonl", "peer.jsonl") and os.path.exists(os.path.join(os.path.dirname(p), "bench.jsonl")):
                continue  # bench.jsonl already holds both sides
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rec = compact(json.loads(line))
                    except ValueError:
                        continue
                    if rec:
                        bench.append(rec)
            continue
        for m in re.finditer(r"(\d+) passed, (\d+) failed", text):
            counts[name] = {"passed": int(m.group(1)), "failed": int(m.group(2))}  # the last one is the total
        for pat, key in ((r"(\d+) check\(s\) failed", "failed"), (r"(\d+) failure\(s\)", "failed"),
                         (r"torch_families check: (\d+) failed", "failed")):
            for m in re.finditer(pat, text):
                counts.setdefault(name, {})[key] = int(m.group(1))
        for line in text.splitlines():
            s = line.strip()
            if re.match(r"^(\[FAIL\]|FAIL\b|FAILED\b|build failed|.*Traceback \(most recent call last\))", s):
                failures.append(f"{name}: {s[:300]}")
            elif re.match(r"^(NCCL: |skip: )", s):
                notes.append(f"{name}: {s[:200]}")
    return counts, failures[:12], bench[:40], notes[:8]


# tokens/s ours / HF + torch.compile on the same GPU in the same run, per benchmark model
SPEED_GATES = {"gpt2": 1.45, "gpt2-xl": 1.2, "llama-1b": 1.0}


def verdict(doc):
    """Every stage that ran passed; with the benchmarks, every case met its speed gate (no peer: the gate fails)."""
    # a stage passes, or was skipped as not applicable on this host (a stage the time budget left out fails)
    ok = lambda s: s["status"] == "pass" or (s["status"] == "skip" and not s.get("note", "").startswith("no time left"))
    gates = [{"gate": f"stage {s['stage']}", "pass": ok(s), "value": s["status"]} for s in doc["stages"]]
    if not any(s["stage"] == "bench" for s in doc["stages"]):
        return gates  # the benchmarks were not asked for (--only / --skip)
    bench = [b for s in doc["stages"] if s["stage"] == "bench" for b in s.get("bench", [])]
    for model, need in SPEED_GATES.items():
        rows = [b for b in bench if str(b.get("case", "")).split(" ")[0] == model]
        ratio = rows[-1].get("ratio_tokens_per_s") if rows else None
        gates.append({"gate": f"{model} >= {need}x peer", "pass": ratio is not None and ratio >= need,
                      "value": ratio if ratio is not None else "not measured"})
    return gates


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "init":
        host, gpus, info = sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5] if len(sys.argv) > 5 else "{}")
        save(path, {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": host, "gpus": gpus,
                    "setup": info, "stages": []})
    elif cmd == "stage":
        name, status, secs, logdir = sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
        note = sys.argv[7] if len(sys.argv) > 7 else ""
        doc = load(path)
        rec = {"stage": name, "status": status, "seconds": round(secs, 1)}
        if note:
            rec["note"] = note
        if os.path.isdir(logdir):
            counts, failures, bench, notes = scan(logdir)
            if len(counts) > 1:
                counts.pop("stdout.log", None)  # the suites tee their logs: stdout repeats them
            if counts:
                rec["counts"] = counts
                passed = [c["passed"] for c in counts.values() if "passed" in c]
                if rec["status"] == "pass" and passed and sum(passed) == 0:
                    rec["status"] = "fail"  # e.g. no GPU visible: every group skipped, exit 0
                    rec["note"] = (rec.get("note", "") + "; " if rec.get("note") else "") + "no check ran (0 passed)"
                if status == "pass" and any(c.get("failed") for c in counts.values()):
                    rec["status"] = "fail"  # a suite printed failures but exited 0: trust the count
            if failures:
                rec["failures"] = failures
            if bench:
                rec["bench"] = bench
            if notes:
                rec["notes"] = notes
            # the bench scripts exit 0 even when a side crashed: a bench stage passes only with a measurement
            measured = any("tokens_per_s" in b or "ms_per_step" in b or "tokens_per_s" in b.get("ours", {})
                           for b in bench if "error" not in b)
            if "bench" in name and rec["status"] == "pass" and not measured:
                rec["status"] = "fail"
                rec["note"] = (rec.get("note", "") + "; " if rec.get("note") else "") + "no measurement in the logs"
        doc["stages"] = [s for s in doc["stages"] if s["stage"] != name] + [rec]
        doc["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save(path, doc)
    elif cmd == "print":
        doc = load(path)
        print(f"== summary: {doc['host']}, {doc['gpus']} GPU(s), setup {json.dumps(doc.get('setup', {}))}")
        for s in doc["stages"]:
            bits = [f"{s['stage']:<16} {s['status']:<7} {s['seconds']:>6.0f}s"]
            for n, c in s.get("counts", {}).items():
                bits.append(f"{n}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
            for b in s.get("bench", [])[:6]:
                keys = ("case", "model", "variant", "stage", "gpus", "tokens_per_s", "ms_per_step", "median_ms",
                        "ratio_tokens_per_s", "step_ratio", "ratio", "error")
                shown = ", ".join(f"{k}={b[k]}" for k in keys if k in b)
                if shown:
                    bits.append("{" + shown + "}")
            if s.get("note"):
                bits.append(s["note"])
            print(" | ".join(bits))
            for f in s.get("failures", [])[:4]:
                print("    " + f)
    elif cmd == "verdict":
        doc = load(path)
        gates = verdict(doc)
        doc["gates"] = gates
        save(path, doc)
        for g in gates:
            print(f"gate {g['gate']}: {'pass' if g['pass'] else 'FAIL'} ({g['value']})")
        sys.exit(0 if gates and all(g["pass"] for g in gates) else 1)
    else:
        sys.exit(f"summary.py: unknown command {cmd!r} (init | stage | print | verdict)")


if __name__ == "__main__":
    main()
