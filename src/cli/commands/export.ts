import { EXPORT_TARGETS, exportModel, type ExportTarget } from "../../export/index.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, openBackend, parseCommand, requireOption, parseSize } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune export --model <dir|file.gguf> [--adapter <dir|file.gguf>] --to gguf|safetensors|peft --out <path> [--dtype TYPE]

  --to gguf           a model llama.cpp loads (--out file.gguf); with --adapter, the LoRA adapter
                      alone as a GGUF adapter for llama.cpp's --lora (DoRA cannot be expressed),
                      or with --adapter --merge the merged model
  --to safetensors    a Hugging Face checkpoint folder (config.json, tokenizer files, sharded
                      model.safetensors); with --adapter, the merged model (merge_and_unload)
  --to peft           the adapter (PEFT folder or GGUF LoRA) as a PEFT folder

  --model PATH        Hugging Face folder (config.json + safetensors + tokenizer.json) or a llama.cpp .gguf
  --adapter PATH      PEFT LoRA/DoRA folder, or a llama.cpp GGUF LoRA (.gguf)
  --out PATH          output file (gguf) or folder (safetensors, peft), written atomically
  --dtype TYPE        gguf model: f32 (default), f16, bf16, q8_0, q4_0, q4_k (1-D tensors stay f32;
                      rows a block cannot divide fall back to q8_0 or f16)
                      gguf adapter: f32, f16, bf16; safetensors: f32, f16, bf16
  --merge             with --to gguf and --adapter: write the merged model instead of the adapter
  --tokenizer-pre NAME  llama.cpp pre-tokenizer (tokenizer.ggml.pre) when it cannot be detected
                      from tokenizer.json (detected: gpt-2, llama-bpe, qwen2, smollm)
  --name NAME         general.name of the GGUF (default: the folder or file name)
  --max-shard-size SIZE  bytes per safetensors shard, e.g. 2GB (default 5GB)
  --force             replace --out if it exists
${DEVICE_USAGE}`;

export const exportCommand: Command = {
  summary: "export a model or adapter: GGUF for llama.cpp, merged safetensors, or PEFT",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values } = parseCommand(args, {
      ...DEVICE_OPTIONS, model: { type: "string" }, adapter: { type: "string" }, to: { type: "string" }, out: { type: "string" },
      dtype: { type: "string" }, merge: { type: "boolean" }, "tokenizer-pre": { type: "string" }, name: { type: "string" },
      "max-shard-size": { type: "string" }, force: { type: "boolean" },
    }, USAGE);
    const model = requireOption(values, "model", USAGE);
    const to = requireOption(values, "to", USAGE);
    const out = requireOption(values, "out", USAGE);
    if (!(EXPORT_TARGETS as readonly string[]).includes(to)) throw new Error(`--to must be one of ${EXPORT_TARGETS.join(", ")}, got "${to}"\n\n${USAGE}`);
    const maxShardBytes = values["max-shard-size"] === undefined ? undefined : parseSize(values["max-shard-size"]);
    const backend = await openBackend(values);
    try {
      const result = exportModel({
        model, adapter: values.adapter, to: to as ExportTarget, out, dtype: values.dtype, merge: values.merge,
        tokenizerPre: values["tokenizer-pre"], name: values.name, maxShardBytes, overwrite: values.force, backend,
      });
      process.stdout.write(`${result.summary}\n`);
    } finally {
      backend.close();
    }
  },
};
