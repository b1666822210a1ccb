#!/usr/bin/env bash
# Packs what a GPU machine needs to run the finetune workers and is missing there: Node.js + npm + headers and the
# production node_modules (Temporal core bridge pruned to linux x64, no dev tools, no sources of native deps),
# into .ft-kit/ (git-ignored through .git/info/exclude). About 57 MB; the device carry limit is 64 MiB.
#   test/e2e/gpu/make-kit.sh            then   carry [".ft-kit"]   and   bash test/e2e/gpu/run.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
kit="$root/.ft-kit"
cd "$root"
grep -qxF '/.ft-kit/' .git/info/exclude 2>/dev/null || echo '/.ft-kit/' >> .git/info/exclude
rm -rf "$kit" && mkdir -p "$kit"
stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/include" "$stage/lib/node_modules"
cp "$(readlink -f "$(command -v node)")" "$stage/bin/node"
cp -r /usr/include/node "$stage/include/node"
cp -r /usr/lib/node_modules/npm "$stage/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/bin/npx"
tar -C "$stage" -cf - . | xz -T0 -6 > "$kit/node.tar.xz"
rm -rf "$stage"
# Production dependencies only; native packages keep only their linux-x64-gnu binary.
npm ls --omit=dev --all --parseable 2>/dev/null | sed "s|$root/||" | grep '^node_modules/' \
  | awk -F/ '{ if ($2 ~ /^@/) print $1"/"$2"/"$3; else print $1"/"$2 }' | sort -u > "$kit/packages.txt"
tar -cf - --exclude='node_modules/@temporalio/core-bridge/sdk-core' \
  --exclude='node_modules/@temporalio/core-bridge/releases/aarch64*' \
  --exclude='node_modules/@temporalio/core-bridge/releases/*apple*' \
  --exclude='node_modules/@temporalio/core-bridge/releases/*windows*' \
  --exclude='node_modules/better-sqlite3/deps' --exclude='node_modules/better-sqlite3/src' \
  --exclude='node_modules/better-sqlite3/build/Release/obj*' --exclude='*.map' --exclude='*.d.ts' \
  --exclude='node_modules/tokenizers/tokenizers.[!l]*.node' --exclude='node_modules/tokenizers/tokenizers.linux-arm*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' \
  $(cat "$kit/packages.txt") | xz -T0 -6 > "$kit/node_modules.tar.xz"
cat > "$kit/setup.sh" <<'SETUP'
# sourced on the GPU machine from the repository root
_kit=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p /tmp/node-kit && xz -dc "$_kit/node.tar.xz" | tar -C /tmp/node-kit -xf -
export PATH=/tmp/node-kit/bin:$PATH npm_config_nodedir=/tmp/node-kit
for t in "$_kit"/node_modules*.tar.xz; do xz -dc "$t" | tar -xf -; done
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
unset _kit
SETUP
du -sh "$kit"/*
