#!/usr/bin/env python3
"""Token data for the GPU suites on a host without Node (test/gpu/run.sh calls it when GPU_TEST_DATA is missing):
the UTF-8 bytes of the repository's Shakespeare excerpt as int32 token ids (every byte value is a valid GPT-2 id,
so the stream has real text statistics; `npm run test:gpu` writes GPT-2 BPE tokens instead).

  make_data.py OUT.i32 [TEXT]
"""
import array
import os
import sys

if len(sys.argv) not in (2, 3):
    sys.exit(__doc__)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
src = sys.argv[2] if len(sys.argv) == 3 else os.path.join(root, "test", "fixtures", "datasets", "shakespeare-excerpt.txt")
with open(src, "rb") as f:
    ids = array.array("i", list(f.read()))
os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
with open(sys.argv[1], "wb") as f:
    ids.tofile(f)
print(f"{sys.argv[1]}: {len(ids)} tokens (bytes of {os.path.relpath(src, root)})")
