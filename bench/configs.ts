// The fixed configurations `npm run bench` measures; bench/torch_bench.py reads the same JSON.
export interface BenchConfig {
  name: string;
  method: "full" | "lora";
  loraRank?: number;
  model: {
    hidden_size: number; num_hidden_layers: number; num_attention_heads: number; num_key_value_heads: number;
    intermediate_size: number; vocab_size: number; tie_word_embeddings: boolean;
  };
  batchSize: number;
  seqLen: number;
  /** GPU configurations run only with `npm run bench -- --gpu`. */
  device?: "cuda";
  /** Storage type of the (frozen) base weights; adapters and optimizer state stay f32. */
  weightDtype?: "f32" | "bf16" | "f16";
  threads: number;
  warmupSteps: number;
  timedSteps: number;
}

const CPU_SMALL = {
  hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4,
  intermediate_size: 688, vocab_size: 512, tie_word_embeddings: false,
};
const SMOLLM2_135M = {
  hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3,
  intermediate_size: 1536, vocab_size: 49152, tie_word_embeddings: true,
};

// Issue 8's GPU shape: Llama-3.2-1B-like (hidden 2048, 16 layers, 32 heads, 8 KV heads, SwiGLU 8192,
// vocab 128256), 8 x 1024 tokens a step.
const LLAMA_1B = {
  hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8,
  intermediate_size: 8192, vocab_size: 128256, tie_word_embeddings: true,
};
const GPU = { model: LLAMA_1B, batchSize: 8, seqLen: 1024, device: "cuda", threads: 1, warmupSteps: 2, timedSteps: 5 } as const;

export const BENCH_CONFIGS: BenchConfig[] = [
  { name: "cpu-small-full", method: "full", model: CPU_SMALL, batchSize: 4, seqLen: 128, threads: 2, warmupSteps: 2, timedSteps: 10 },
  { name: "cpu-small-lora16", method: "lora", loraRank: 16, model: CPU_SMALL, batchSize: 4, seqLen: 128, threads: 2, warmupSteps: 2, timedSteps: 10 },
  { name: "smollm2-135m-lora16", method: "lora", loraRank: 16, model: SMOLLM2_135M, batchSize: 2, seqLen: 256, threads: 2, warmupSteps: 1, timedSteps: 3 },
  { ...GPU, name: "llama1b-lora16-bf16", method: "lora", loraRank: 16, weightDtype: "bf16" },
  { ...GPU, name: "llama1b-lora16-f16", method: "lora", loraRank: 16, weightDtype: "f16" },
  { ...GPU, name: "llama1b-full-f32", method: "full", weightDtype: "f32" },
];
