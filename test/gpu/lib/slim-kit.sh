#!/usr/bin/env bash
# A smaller copy of the Node kit (.ft-kit from test/e2e/gpu/make-kit.sh) for a device call that also carries the
# prebuilt GPU programs and token data: the GPU host only runs `node` and builds the addon with CMake, so npm (with
# node-gyp) and all of Node's headers except the Node-API ones are left out (~56 -> ~49 MiB). Same setup.sh.
#   test/gpu/lib/slim-kit.sh [SRC=.ft-kit] [DEST=.gpu-kit]      then carry DEST instead of .ft-kit
# DEST must be git-ignored (.gpu-kit/ is, through .gitignore). test/gpu/session.sh uses .gpu-kit when present.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
src=${1:-.ft-kit}; dest=${2:-.gpu-kit}
[ -f "$src/setup.sh" ] && [ -f "$src/node.tar.xz" ] || { echo "slim-kit: $src has no setup.sh/node.tar.xz: run test/e2e/gpu/make-kit.sh first" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
xz -dc "$src/node.tar.xz" | tar -C "$tmp" -xf -
rm -rf "$tmp/lib/node_modules/npm" "$tmp/bin/npm" "$tmp/bin/npx"
# the addon includes <napi.h> (node-addon-api, in node_modules) which includes node_api.h and what it reaches
keep=$(cd "$tmp/include/node" && ls node_api*.h js_native_api*.h node_version.h 2>/dev/null)
mkdir -p "$tmp/napi" && (cd "$tmp/include/node" && cp $keep "$tmp/napi/")
rm -rf "$tmp/include/node" && mv "$tmp/napi" "$tmp/include/node"
rm -rf "$dest" && mkdir -p "$dest"
tar -C "$tmp" -cf - . | xz -T0 -9 > "$dest/node.tar.xz"
cp "$src"/node_modules*.tar.xz "$src/setup.sh" "$dest/"
[ -f "$src/packages.txt" ] && cp "$src/packages.txt" "$dest/"
echo "slim-kit: $dest ($(du -sh "$dest" | cut -f1); headers kept: $(echo $keep | tr '\n' ' '))"
