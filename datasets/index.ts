// The data half of the pipeline: corpus → tokens → blockSize Parquet shards + manifest.json.
// This is the stable API other parts call; see datasets/README.md for the formats and conventions.
//
// labels convention: labels[t] is the target AT position t (NOT shifted): labels == input_ids except -100 where
// no loss (padding, instruction prompts). The engine predicts labels[t+1] from position t (Hugging Face's).
export { prepareData, isValidation, type PrepareOptions, type PrepareProgress, type PrepareResult } from './prepare.js';
export { readManifest, verifyShards, Manifest, SplitStats, ShardEntry, DONE_MARKER, MANIFEST_FORMAT } from './manifest.js';
export { readShard, decodeShard, encodeShard, IGNORE_INDEX, type ShardArrays } from './shards.js';
export { loadTokenizer, gpt2TokenizerJson, addedTokenText, type LoadedTokenizer } from './tokenizer.js';
export { carryModelFiles, readModelShape, shapeMismatches, tokenizerFolder } from './model-folder.js';
export { BUILTIN_CHAT_TEMPLATES } from './chat.js';
export { DataError, type DataErrorCode } from './errors.js';
export { PREPARE_VERSION } from './fingerprint.js';
export { alpacaPrompt, ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT } from './alpaca.js';
