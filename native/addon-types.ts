// The compiled addon's surface, declared by hand (binding/addon.cpp). Only native/index.ts uses it.

export interface NativeCreateOptions {
  model: { nLayer: number; nHead: number; nEmbd: number; nPositions: number; vocabSize: number; dropout: number; initSeed: number } & NativeFamilyFields;
  training: {
    microBatchSize: number; gradAccumSteps: number; learningRate: number; minLrRatio: number; warmupSteps: number;
    schedule: 'cosine' | 'linear' | 'constant'; weightDecay: number; beta1: number; beta2: number; eps: number;
    gradClip: number; shuffleSeed: number; divergenceLoss: number;
  };
  backend: {
    name: 'cpu' | 'cuda'; precision: 'fp32' | 'bf16'; recompute: string; device: number; zeroStage: number;
    offload: string; worldSize: number; rank: number; threads: number;
    /** local CUDA ordinals (one engine thread each); `device` is the first */
    devices: number[];
    /** offload: apply each CPU AdamW update one step late, overlapping the next forward */
    delayedUpdate: boolean;
    /** NCCL unique id (256 hex digits) from rank 0 (multi-worker); absent: a single worker makes its own */
    ncclId?: string;
  };
  hfDir?: string;
  checkpointDir?: string;
  configJson?: string;
}

/** Family fields (native/engine/families.h); absent = the family's default. */
export interface NativeFamilyFields {
  family?: 'gpt2' | 'llama' | 'gpt_neox' | 'gptj'; nKvHead?: number; headDim?: number; intermediateSize?: number;
  rotaryDim?: number; ropeTheta?: number; layerNormEps?: number; rmsNormEps?: number; tieWordEmbeddings?: boolean;
  parallelResidual?: boolean; ropeScaling?: { type: string; factor: number; lowFreqFactor: number; highFreqFactor: number;
    originalMaxPositionEmbeddings: number };
  hiddenAct?: string; bosTokenId?: number; eosTokenId?: number;
}

export interface NativeShard { nSeq: number; blockSize: number; inputIds: Int32Array; labels: Int32Array; positionIds?: Int32Array }

export interface NativeEngine {
  info(): { backend: 'cpu' | 'cuda'; device: string; blas: string; precision: 'fp32' | 'bf16'; threads: number; nParams: number;
    nLayer: number; nHead: number; nEmbd: number; nPositions: number; vocabSize: number; family: string;
    nKvHead?: number; headDim?: number; intermediateSize?: number; rotaryDim?: number; ropeTheta?: number;
    tieWordEmbeddings?: boolean; parallelResidual?: boolean; hiddenAct?: string; bosTokenId?: number; eosTokenId?: number;
    zeroStage?: number; offload?: string; worldSize?: number; rank?: number; devices?: number[] };
  state(): { step: number; cursor: { epoch: number; shard: number; offset: number; shuffleSeed: number } };
  setTrainData(shards: NativeShard[]): void;
  train(nSteps: number, totalSteps: number, onProgress?: (p: {
    step: number; loss: number; lr: number; gradNorm: number; tokensPerSec: number; elapsedMs: number }) => void):
    Promise<{ step: number; losses: Float64Array; tokens: number; tokensPerSec: number; aborted: boolean }>;
  abort(): void;
  evaluate(shards: NativeShard[], maxBatches: number, batchSize: number):
    Promise<{ loss: number; perplexity: number; accuracy: number; tokens: number; sequences: number; aborted: boolean }>;
  generate(prompts: Int32Array[], opts: { maxNewTokens: number; temperature: number; topK: number; topP: number; seed: number; eosId: number }): Promise<Int32Array[]>;
  saveCheckpoint(dir: string, extraJson: string): Promise<{ dir: string; step: number; sha256: string; bytes: number; existed: boolean }>;
  exportHuggingFace(dir: string, tokenizerJson: string, eosId: number, bosId?: number): Promise<void>;
  forwardLogits(inputIds: Int32Array, B: number, T: number, positionIds?: Int32Array): Promise<Float32Array>;
  gradients(inputIds: Int32Array, labels: Int32Array, B: number, T: number, positionIds?: Int32Array): Promise<{ loss: number; grads: Float32Array }>;
  getParams(): Promise<Float32Array>;
  layout(): { name: string; shape: number[]; offset: number; numel: number }[];
  memoryReport(): { paramsBytes: number; gradsBytes: number; optimizerBytes: number; activationsBytes: number; otherBytes: number;
    buffersBytes?: number; totalBytes: number; deviceTotalBytes?: number; zeroStage?: number; worldSize?: number;
    formulaBytes?: number; formulaPaperBytes?: number };
  dispose(): void;
}

export interface NativeAddon {
  createEngine(o: NativeCreateOptions): Promise<NativeEngine>;
  verifyCheckpoint(dir: string): Promise<number>;
  /** Hugging Face export from a checkpoint's files (engine::export_checkpoint_hf); eosId -1: the model's own; bosId -1: the tokenizer adds none. */
  exportCheckpoint(checkpointDir: string, dir: string, tokenizerJson: string, eosId: number, bosId?: number): Promise<void>;
  buildInfo(): { backends: string; blas: string; cudaDevices: number };
  estimateMemory(o: NativeCreateOptions, blockSize: number, deviceBytes: number, hostBytes: number): NativeMemoryEstimate;
  /** 256 hex digits (engine::nccl_unique_id); builds without CUDA throw BAD_CONFIG. Absent in older addons. */
  ncclUniqueId?(): string;
}

/** engine/zero.h MemoryEstimate: per-rank bytes. */
export interface NativeMemoryEstimate {
  nParams: number; shardElems: number; formula: string;
  paramsBytes: number; gradsBytes: number; masterBytes: number; momentsBytes: number;
  activationsBytes: number; buffersBytes: number; deviceBytes: number; hostBytes: number;
  fits?: boolean; advice?: string;
}
