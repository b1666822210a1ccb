# shellcheck shell=bash
# Sourced by test/gpu/prebuild.sh and test/gpu/session.sh: which sources the prebuilt GPU programs are made of, and
# one hash over them, so the device can tell whether the binaries it was handed match the tree it runs (a stale
# binary would validate old code under a new commit's name).
gpu_src_files() {
  find native/engine native/reference native/lab test/gpu bench -maxdepth 2 -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort
  echo test/gpu/prebuild.sh   # the flags are part of what was built
}
gpu_src_hash() { gpu_src_files | xargs sha256sum | sha256sum | cut -c1-16; }
