"""Read our Parquet shards with pyarrow (and Hugging Face `datasets` when installed) and compare them with what our
own reader saw (dump-shards.ts). Run where pyarrow exists, e.g. the GPU machines:
    python3 test/interop/check_shards.py <prepared-dir> <dump.json>
"""
import json, sys, os
import pyarrow.parquet as pq

def main(d, dump_file):
    dump = json.load(open(dump_file))
    ok = True
    for path, want in dump["shards"].items():
        t = pq.read_table(os.path.join(d, path))
        cols = t.column_names
        ids = t.column("input_ids").to_pylist()
        labels = t.column("labels").to_pylist()
        got = {
            "nSeq": t.num_rows,
            "lens_ok": all(len(r) == want["blockSize"] for r in ids) and all(len(r) == want["blockSize"] for r in labels),
            "idSum": sum(map(sum, ids)), "labelSum": sum(map(sum, labels)),
            "maskSum": sum(map(sum, t.column("attention_mask").to_pylist())) if "attention_mask" in cols else None,
            "first": ids[0] == want["firstIds"] and labels[0] == want["firstLabels"],
            "types": {c: str(t.schema.field(c).type) for c in cols},
        }
        good = (got["nSeq"] == want["nSeq"] and got["lens_ok"] and got["idSum"] == want["idSum"]
                and got["labelSum"] == want["labelSum"] and got["maskSum"] == want["maskSum"] and got["first"])
        ok &= good
        print(json.dumps({"shard": path, "pyarrow": "ok" if good else "MISMATCH", **got}))
    try:
        import datasets
        files = {s: [os.path.join(d, sh["path"]) for sh in v["shards"]] for s, v in dump["manifest"]["splits"].items()}
        ds = datasets.load_dataset("parquet", data_files=files)
        for s, v in dump["manifest"]["splits"].items():
            good = ds[s].num_rows == v["sequences"]
            ok &= good
            print(json.dumps({"hf_datasets": datasets.__version__, "split": s, "rows": ds[s].num_rows, "ok": good}))
    except ImportError:
        print(json.dumps({"hf_datasets": "not installed"}))
    print("ALL OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main(*sys.argv[1:3])
