import { loadAdapter } from "../../adapters/peft-io.ts";
import { FormatError } from "../../io/errors.ts";
import { openSafetensors, writeSafetensors } from "../../io/safetensors.ts";
import { loadModel } from "../../models/index.ts";
import type { Batch } from "../../models/model.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, openBackend, parseCommand, requireOption } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune forward --model <dir> --input-ids <in.safetensors> --out <out.safetensors>

Runs the model on input_ids (int32/int64 [batch, seq]; attention_mask and token_type_ids are used
when the file has them) and writes float32 logits. When the file also holds labels, the Hugging
Face loss is written as "loss".
  --model DIR          Hugging Face checkpoint folder (config.json + safetensors)
  --input-ids FILE     safetensors file with input_ids
  --out FILE           where to write logits (written atomically)
  --adapter DIR        apply a PEFT LoRA/DoRA adapter (adapter_config.json + adapter_model.safetensors)
${DEVICE_USAGE}`;

export const forwardCommand: Command = {
  summary: "run a checkpoint on token ids and write its logits (debug a port against transformers)",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values } = parseCommand(args, { ...DEVICE_OPTIONS, model: { type: "string" }, adapter: { type: "string" }, "input-ids": { type: "string" }, out: { type: "string" } }, USAGE);
    const modelDir = requireOption(values, "model", USAGE);
    const inputFile = requireOption(values, "input-ids", USAGE);
    const outFile = requireOption(values, "out", USAGE);
    const { batch, labels } = readBatch(inputFile);
    const backend = await openBackend(values);
    const model = loadModel(backend, modelDir);
    if (values.adapter) loadAdapter(model, values.adapter);
    const result = model.run(batch, labels);
    const tensors = [{ name: "logits", dtype: "F32" as const, shape: result.logitsShape, data: result.logits }];
    if (result.loss !== undefined) tensors.push({ name: "loss", dtype: "F32", shape: [1], data: Float32Array.of(result.loss) });
    writeSafetensors(outFile, tensors);
    process.stdout.write(`wrote logits [${result.logitsShape.join(", ")}]${result.loss !== undefined ? ` and loss ${result.loss}` : ""} to ${outFile}\n`);
    model.free();
    backend.close();
  },
};

function readBatch(file: string): { batch: Batch; labels?: Int32Array } {
  const reader = openSafetensors(file);
  try {
    const shape = reader.info("input_ids").shape;
    if (shape.length !== 2) throw new FormatError(file, `input_ids must be [batch, seq], got [${shape.join(", ")}]`);
    const read = (name: string, expected: number[]) => {
      if (!reader.tensors.has(name)) return undefined;
      const got = reader.info(name).shape;
      if (got.join() !== expected.join()) throw new FormatError(file, `${name} has shape [${got.join(", ")}], expected [${expected.join(", ")}]`);
      return reader.readI32(name);
    };
    const [batchSize, seqLen] = shape;
    const batch: Batch = {
      batchSize, seqLen,
      inputIds: reader.readI32("input_ids"),
      attentionMask: read("attention_mask", shape),
      tokenTypeIds: read("token_type_ids", shape),
    };
    const labelShape = reader.tensors.has("labels") ? reader.info("labels").shape : undefined;
    return { batch, labels: labelShape ? read("labels", labelShape) : undefined };
  } finally {
    reader.close();
  }
}
