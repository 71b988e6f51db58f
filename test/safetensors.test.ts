import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  SAFETENSORS_DTYPES, bf16ToF32, dtypeSize, f16ToF32, f32ToBf16, f32ToF16, fromFloat32, toFloat32,
  type SafetensorsDtype, type StorageArray,
} from "../src/io/dtype.ts";
import { FormatError } from "../src/io/errors.ts";
import { tempDirs } from "./support/tmp.ts";
import {
  ShardedSafetensorsWriter, openCheckpoint, openSafetensors, writeSafetensors, writeShardedSafetensors,
  type TensorData, type TensorReader,
} from "../src/io/safetensors.ts";

const LLAMA = "test/fixtures/hf/llama-tiny";
const freshDir = tempDirs("tasktune-safetensors");

function bitsOf(value: number): number {
  return new Uint32Array(Float32Array.of(value).buffer)[0]!;
}

function fromBits(bits: number): number {
  return new Float32Array(Uint32Array.of(bits).buffer)[0]!;
}

function readAll(reader: TensorReader): TensorData[] {
  return [...reader.tensors.values()].map(({ name, dtype, shape }) => ({ name, dtype, shape, data: reader.readRaw(name) }));
}

function assertSameTensors(reader: TensorReader, expected: readonly TensorData[]): void {
  assert.deepEqual([...reader.tensors.keys()].sort(), expected.map((t) => t.name).sort());
  for (const { name, dtype, shape, data } of expected) {
    const info = reader.info(name);
    assert.deepEqual([info.dtype, info.shape], [dtype, shape], name);
    assert.deepEqual(reader.readRaw(name), new Uint8Array(data.buffer, data.byteOffset, data.byteLength), name);
  }
}

/** Deterministic sample values for each dtype, in its storage array. */
function sampleData(dtype: SafetensorsDtype, count: number): StorageArray {
  const values = Array.from({ length: count }, (_, i) => i * 37 - 50);
  switch (dtype) {
    case "F64": return Float64Array.from(values, (v) => v / 7);
    case "F32": return Float32Array.from(values, (v) => v / 7);
    case "F16": return fromFloat32("F16", Float32Array.from(values, (v) => v / 7));
    case "BF16": return fromFloat32("BF16", Float32Array.from(values, (v) => v / 7));
    case "I64": return BigInt64Array.from(values, (v) => BigInt(v) * 3_000_000_000n);
    case "U64": return BigUint64Array.from(values, (v) => BigInt(Math.abs(v)) * 3_000_000_000n);
    case "I32": return Int32Array.from(values, (v) => v * 1_000_000);
    case "U32": return Uint32Array.from(values, (v) => Math.abs(v) * 1_000_000);
    case "I16": return Int16Array.from(values);
    case "U16": return Uint16Array.from(values, Math.abs);
    case "I8": return Int8Array.from(values, (v) => v % 128);
    case "BOOL": return Uint8Array.from(values, (v) => v & 1);
    default: return Uint8Array.from(values, (v) => v & 0x7e);
  }
}

function sampleTensors(dtypes: readonly SafetensorsDtype[]): TensorData[] {
  return dtypes.map((dtype) => ({ name: `t.${dtype.toLowerCase()}`, dtype, shape: [2, 3], data: sampleData(dtype, 6) }));
}

// ---------------------------------------------------------------------------------------------
// dtype conversions

test("f32ToF16 rounds to nearest even and handles subnormals, overflow, infinity and NaN", () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.1, 0x2e66], [1 / 3, 0x3555],
    [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00],
    [Infinity, 0x7c00], [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], [1023 * 2 ** -24, 0x03ff], [2 ** -24, 0x0001], [-(2 ** -24), 0x8001],
    [2 ** -25, 0x0000], [fromBits(0x33000001), 0x0001], [3 * 2 ** -25, 0x0002], [2 ** -30, 0x0000],
    [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01],
  ];
  for (const [value, bits] of cases) assert.equal(f32ToF16(value), bits, `f32ToF16(${value})`);
  assert.equal(f32ToF16(NaN) & 0x7e00, 0x7e00);
  // A NaN whose payload lies only in bits that binary16 drops must stay NaN.
  assert.equal(f32ToF16(fromBits(0x7f800001)), 0x7e00);
});

test("f16ToF32 decodes known patterns and round-trips all 65536 of them", () => {
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x3555), 0.333251953125);
  assert.ok(Object.is(f16ToF32(0x8000), -0));
  assert.equal(f16ToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = f16ToF32(bits);
    if (Number.isNaN(value)) assert.equal(bits & 0x7c00, 0x7c00);
    else assert.equal(f32ToF16(value), bits);
  }
});

test("f32ToBf16 rounds to nearest even; bf16ToF32 round-trips all 65536 patterns", () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3f80], [-2, 0xc000], [Infinity, 0x7f80], [-Infinity, 0xff80],
    [fromBits(0x3f808000), 0x3f80], [fromBits(0x3f818000), 0x3f82], [fromBits(0x3f808001), 0x3f81],
    [fromBits(0x7f7fffff), 0x7f80], [fromBits(0x00000001), 0x0000], [fromBits(0x00008001), 0x0001],
  ];
  for (const [value, bits] of cases) assert.equal(f32ToBf16(value), bits, `f32ToBf16(${value})`);
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(fromBits(0x7f800001)))));
  assert.equal(bitsOf(bf16ToF32(0xc049)), 0xc0490000);
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = bf16ToF32(bits);
    if (Number.isNaN(value)) assert.equal(bits & 0x7f80, 0x7f80);
    else assert.equal(f32ToBf16(value), bits);
  }
});

test("toFloat32 decodes every dtype, including float8", () => {
  const bytes = (array: StorageArray) => new Uint8Array(array.buffer);
  assert.deepEqual(toFloat32("F16", bytes(Uint16Array.of(0x3c00, 0xc000))), Float32Array.of(1, -2));
  assert.deepEqual(toFloat32("BF16", bytes(Uint16Array.of(0x3f80, 0xc000))), Float32Array.of(1, -2));
  assert.deepEqual(toFloat32("F64", bytes(Float64Array.of(0.5, -3))), Float32Array.of(0.5, -3));
  assert.deepEqual(toFloat32("I64", bytes(BigInt64Array.of(-7n, 1n << 40n))), Float32Array.of(-7, 2 ** 40));
  assert.deepEqual(toFloat32("I8", Uint8Array.of(0xff, 5)), Float32Array.of(-1, 5));
  assert.deepEqual(toFloat32("F8_E4M3", Uint8Array.of(0x38, 0x7e, 0x01, 0xb8)), Float32Array.of(1, 448, 2 ** -9, -1));
  assert.ok(Number.isNaN(toFloat32("F8_E4M3", Uint8Array.of(0x7f))[0]));
  assert.deepEqual(toFloat32("F8_E5M2", Uint8Array.of(0x3c, 0x7b, 0x7c, 0x01)), Float32Array.of(1, 57344, Infinity, 2 ** -16));
  // Misaligned input must still decode (it is copied, not viewed).
  const misaligned = new Uint8Array(9).subarray(1);
  misaligned.set(bytes(Float32Array.of(1.5, -2)));
  assert.deepEqual(toFloat32("F32", misaligned), Float32Array.of(1.5, -2));
});

// ---------------------------------------------------------------------------------------------
// Reading the Python-written fixtures

test("reads the llama-tiny model lazily with absolute offsets", () => {
  const model = openSafetensors(`${LLAMA}/model.safetensors`);
  try {
    assert.equal(model.tensors.size, 21);
    assert.deepEqual(model.metadata, { format: "pt" });
    const norm = model.info("model.norm.weight");
    assert.deepEqual([norm.dtype, norm.shape, norm.byteLength], ["F32", [64], 256]);
    assert.deepEqual([...model.readF32("model.norm.weight").subarray(0, 3)], [1.583814263343811, 1.5852785110473633, 1.4935650825500488]);
    const file = readFileSync(`${LLAMA}/model.safetensors`);
    for (const info of model.tensors.values()) {
      assert.deepEqual(model.readRaw(info.name), new Uint8Array(file.subarray(info.byteOffset, info.byteOffset + info.byteLength)));
    }
    assert.deepEqual(model.info("model.embed_tokens.weight").shape, [512, 64]);
    assert.throws(() => model.readRaw("nope"), (err) => err instanceof FormatError && /"nope"/.test(err.message));
  } finally {
    model.close();
  }
  assert.throws(() => model.readRaw("model.norm.weight"), /after close/);
});

test("reads the llama-tiny reference tensors as int32 and float32", () => {
  const reference = openSafetensors(`${LLAMA}/reference.safetensors`);
  try {
    assert.deepEqual(reference.info("input_ids").shape, [2, 14]);
    assert.deepEqual([...reference.readI32("input_ids").subarray(0, 14)], [53, 440, 436, 70, 401, 362, 306, 378, 465, 266, 339, 297, 419, 15]);
    const logits = reference.readF32("logits");
    assert.deepEqual(reference.info("logits").shape, [2, 14, 512]);
    assert.equal(logits.length, 2 * 14 * 512);
    assert.deepEqual([...logits.subarray(0, 3)], [3.257164478302002, -2.3482139110565186, -2.077610731124878]);
    assert.deepEqual([...reference.readF32("loss")], [2.9113717079162598]);
    assert.throws(() => reference.readI32("logits"), (err) => err instanceof FormatError && /"logits".*F32/.test(err.message));
  } finally {
    reference.close();
  }
});

test("openCheckpoint finds model.safetensors, a named adapter file, or a given file", () => {
  const model = openCheckpoint(LLAMA);
  assert.equal(model.path, join(LLAMA, "model.safetensors"));
  assert.equal(model.tensors.size, 21);
  model.close();
  const adapter = openCheckpoint("test/fixtures/hf/llama-tiny-lora-copy", "adapter_model.safetensors");
  assert.equal(adapter.tensors.size, 28);
  assert.ok(adapter.readF32("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight").length > 0);
  adapter.close();
  assert.throws(() => openCheckpoint("test/fixtures/hf/llama-tiny-lora-copy"), (err) => err instanceof FormatError && /model\.safetensors/.test(err.message));
});

// ---------------------------------------------------------------------------------------------
// Writing

test("round-trips every dtype, zero-size and scalar tensors, with aligned data", () => {
  const path = join(freshDir(), "all.safetensors");
  const tensors: TensorData[] = [
    ...sampleTensors(SAFETENSORS_DTYPES),
    { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    { name: "scalar", dtype: "I16", shape: [], data: Int16Array.of(-9) },
    { name: "raw", dtype: "BF16", shape: [2], data: new Uint8Array(Uint16Array.of(0x3f80, 0x4000).buffer) },
  ];
  writeSafetensors(path, tensors, { format: "pt", note: "ünïcode" });
  const file = openSafetensors(path);
  try {
    assert.deepEqual(file.metadata, { format: "pt", note: "ünïcode" });
    assertSameTensors(file, tensors);
    for (const info of file.tensors.values()) assert.equal(info.byteOffset % dtypeSize(info.dtype), 0, `${info.name} aligned`);
    assert.equal(Number(readFileSync(path).readBigUInt64LE(0)) % 8, 0);
    assert.deepEqual([...file.readF32("t.f16")], [...Float32Array.from(sampleData("F32", 6) as Float32Array, (v) => f16ToF32(f32ToF16(v)))]);
    assert.deepEqual([...file.readF32("raw")], [1, 2]);
    assert.deepEqual([...file.readI32("t.i16")], [...(sampleData("I16", 6) as Int16Array)]);
    assert.deepEqual([...file.readI32("t.i32")], [...(sampleData("I32", 6) as Int32Array)]);
    assert.throws(() => file.readI32("t.i64"), (err) => err instanceof FormatError && err.message.includes(`"t.i64" element 0`));
  } finally {
    file.close();
  }
});

test("readI32 accepts I64 values within int32 range", () => {
  const path = join(freshDir(), "ids.safetensors");
  writeSafetensors(path, [{ name: "ids", dtype: "I64", shape: [3], data: BigInt64Array.of(-(2n ** 31n), 0n, 2n ** 31n - 1n) }]);
  const file = openSafetensors(path);
  assert.deepEqual([...file.readI32("ids")], [-(2 ** 31), 0, 2 ** 31 - 1]);
  file.close();
});

test("rejects tensors that do not match their dtype and shape", () => {
  const path = join(freshDir(), "bad.safetensors");
  const attempts: TensorData[][] = [
    [{ name: "x", dtype: "F32", shape: [3], data: new Float32Array(2) }],
    [{ name: "x", dtype: "I32", shape: [2], data: new Float32Array(2) }],
    [{ name: "x", dtype: "F32", shape: [-1], data: new Float32Array(0) }],
    [{ name: "__metadata__", dtype: "U8", shape: [1], data: new Uint8Array(1) }],
    [{ name: "x", dtype: "U8", shape: [1], data: new Uint8Array(1) }, { name: "x", dtype: "U8", shape: [1], data: new Uint8Array(1) }],
  ];
  for (const tensors of attempts) {
    assert.throws(() => writeSafetensors(path, tensors), (err) => err instanceof FormatError && err.message.startsWith(`${path}: tensor "`));
  }
  assert.deepEqual(readdirSync(join(path, "..")), []);
});

test("a write that fails at the rename leaves no file behind", () => {
  const dir = freshDir();
  const target = join(dir, "model.safetensors");
  mkdirSync(target);
  assert.throws(() => writeSafetensors(target, sampleTensors(["F32"])));
  assert.deepEqual(readdirSync(dir), ["model.safetensors"]);
  assert.deepEqual(readdirSync(target), []);
});

test("sharded write matches save_pretrained's layout and reads back identically", () => {
  const dir = freshDir();
  const source = openCheckpoint(LLAMA);
  const tensors = readAll(source);
  source.close();
  const written = writeShardedSafetensors(dir, tensors, { maxShardBytes: 200_000 });
  const files = readdirSync(dir).sort();
  const shardFiles = files.filter((name) => name !== "model.safetensors.index.json");
  assert.ok(shardFiles.length > 2);
  shardFiles.forEach((name, i) => assert.equal(name, `model-0000${i + 1}-of-0000${shardFiles.length}.safetensors`));
  assert.deepEqual(written.sort(), files.map((name) => join(dir, name)));

  const indexText = readFileSync(join(dir, "model.safetensors.index.json"), "utf8");
  const index = JSON.parse(indexText);
  assert.equal(index.metadata.total_size, tensors.reduce((sum, t) => sum + t.data.byteLength, 0));
  assert.deepEqual(Object.keys(index.weight_map), tensors.map((t) => t.name).sort());
  assert.ok(indexText.startsWith('{\n  "metadata": {\n    "total_size": ') && indexText.endsWith("}\n"));
  for (const shard of shardFiles) {
    const file = openSafetensors(join(dir, shard));
    assert.deepEqual(file.metadata, { format: "pt" });
    const bytes = [...file.tensors.values()].reduce((sum, t) => sum + t.byteLength, 0);
    assert.ok(bytes <= 200_000 || file.tensors.size === 1, `${shard} holds ${bytes} bytes`);
    file.close();
  }

  const checkpoint = openCheckpoint(dir);
  assertSameTensors(checkpoint, tensors);
  assert.equal(checkpoint.info("model.norm.weight").file, join(dir, index.weight_map["model.norm.weight"]));
  checkpoint.close();
  const viaIndex = openCheckpoint(join(dir, "model.safetensors.index.json"));
  assert.equal(viaIndex.tensors.size, tensors.length);
  viaIndex.close();

  // Saving again as one file must drop the old shards and index, which loaders would otherwise use.
  writeShardedSafetensors(dir, tensors);
  assert.deepEqual(readdirSync(dir), ["model.safetensors"]);
  assert.deepEqual(readFileSync(join(dir, "model.safetensors")), readFileSync(`${LLAMA}/model.safetensors`));
});

test("streaming writer keeps only finished files and cleans up on abort or failure", () => {
  const dir = freshDir();
  const writer = new ShardedSafetensorsWriter(dir, { maxShardBytes: 16, baseName: "adapter_model", metadata: {} });
  for (const tensor of sampleTensors(["F32", "I64", "U8"])) writer.add(tensor.name, tensor.dtype, tensor.shape, tensor.data);
  assert.ok(readdirSync(dir).every((name) => name.includes(".tmp-")));
  writer.abort();
  assert.deepEqual(readdirSync(dir), []);
  assert.throws(() => writer.add("late", "U8", [1], new Uint8Array(1)), /already finished or aborted/);

  // The bad tensor arrives after a shard has been assembled on disk.
  const tensors = [...sampleTensors(["F32", "F64"]), { name: "bad", dtype: "F32" as const, shape: [4], data: new Float32Array(3) }];
  assert.throws(() => writeShardedSafetensors(dir, tensors, { maxShardBytes: 30 }), (err) => err instanceof FormatError && /"bad"/.test(err.message));
  assert.deepEqual(readdirSync(dir), []);

  assert.deepEqual(new ShardedSafetensorsWriter(dir).finish(), [join(dir, "model.safetensors")]);
  const empty = openCheckpoint(dir);
  assert.deepEqual([empty.tensors.size, empty.metadata], [0, { format: "pt" }]);
  empty.close();
});

// ---------------------------------------------------------------------------------------------
// Corrupt files

/** Writes `header` (JSON-encoded unless already bytes) behind its length, followed by `dataBytes` zero bytes. */
function rawFile(header: unknown, dataBytes = 0, headerLength?: number): string {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerLength ?? json.length));
  const path = join(freshDir(), "corrupt.safetensors");
  writeFileSync(path, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return path;
}

function assertFormatError(open: () => unknown, file: string, ...mentions: string[]): void {
  assert.throws(open, (err) => {
    assert.ok(err instanceof FormatError, String(err));
    assert.equal(err.file, file);
    assert.ok(err.message.startsWith(`${file}: `), err.message);
    for (const mention of mentions) assert.ok(err.message.includes(mention), `"${err.message}" should mention ${mention}`);
    return true;
  });
}

test("rejects malformed safetensors files with errors naming file and tensor", () => {
  const tiny = join(freshDir(), "tiny.safetensors");
  writeFileSync(tiny, Buffer.alloc(5));
  assertFormatError(() => openSafetensors(tiny), tiny, "too short");

  const tensor = (fields: object) => ({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8], ...fields } });
  const cases: [unknown, number, ...string[]][] = [
    [Buffer.from("{not json"), 0, "not valid JSON"],
    [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 0, "not valid JSON"],
    [[1, 2], 0, "not a JSON object"],
    [{ __metadata__: { n: 1 } }, 0, "__metadata__"],
    [{ w: 3 }, 0, '"w"', "not an object"],
    [tensor({ dtype: "Q4_K" }), 8, '"w"', "unknown dtype", "Q4_K"],
    [tensor({ shape: [-2] }), 8, '"w"', "shape"],
    [tensor({ shape: [1.5] }), 8, '"w"', "shape"],
    [tensor({ shape: 2 }), 8, '"w"', "shape"],
    [tensor({ data_offsets: [0] }), 8, '"w"', "data_offsets"],
    [tensor({ data_offsets: [0, 12] }), 12, '"w"', "span 12 bytes", "takes 8"],
    [tensor({}), 4, '"w"', "truncated"],
    [{ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "U8", shape: [4], data_offsets: [4, 8] } }, 8, '"a"', '"b"', "overlap"],
  ];
  for (const [header, dataBytes, ...mentions] of cases) {
    const path = rawFile(header, dataBytes);
    assertFormatError(() => openSafetensors(path), path, ...mentions);
  }
  const overlong = rawFile({}, 0, 1000);
  assertFormatError(() => openSafetensors(overlong), overlong, "header length 1000 exceeds");

  const truncated = join(freshDir(), "model.safetensors");
  writeSafetensors(truncated, sampleTensors(["F32", "I64"]));
  truncateSync(truncated, readFileSync(truncated).length - 1);
  assertFormatError(() => openSafetensors(truncated), truncated, '"t.f32"', "truncated");
});

test("rejects inconsistent sharded checkpoints", () => {
  const tensors = sampleTensors(["F32", "F64", "I32", "U8"]);
  const write = () => {
    const dir = freshDir();
    writeShardedSafetensors(dir, tensors, { maxShardBytes: 30 });
    return { dir, index: join(dir, "model.safetensors.index.json") };
  };

  const missing = write();
  unlinkSync(join(missing.dir, "model-00002-of-00003.safetensors"));
  assertFormatError(() => openCheckpoint(missing.dir), missing.index, '"model-00002-of-00003.safetensors"', "does not exist");

  const ghost = write();
  const index = JSON.parse(readFileSync(ghost.index, "utf8"));
  index.weight_map.ghost = "model-00001-of-00003.safetensors";
  writeFileSync(ghost.index, JSON.stringify(index));
  assertFormatError(() => openCheckpoint(ghost.dir), join(ghost.dir, "model-00001-of-00003.safetensors"), '"ghost"', "absent");

  const duplicate = write();
  writeSafetensors(join(duplicate.dir, "model-00003-of-00003.safetensors"), [...sampleTensors(["U8"]), ...sampleTensors(["F32"])]);
  assertFormatError(() => openCheckpoint(duplicate.dir), join(duplicate.dir, "model-00003-of-00003.safetensors"), '"t.f32"', "model-00001-of-00003.safetensors");

  const escaping = write();
  writeFileSync(escaping.index, JSON.stringify({ weight_map: { x: "../elsewhere.safetensors" } }));
  assertFormatError(() => openCheckpoint(escaping.dir), escaping.index, "weight_map");
});

// ---------------------------------------------------------------------------------------------
// Cross-check with the reference Python implementation

const python = spawnSync("python3", ["-c", "import safetensors.numpy, numpy"], { encoding: "utf8" });
const noPython = python.status === 0 ? false : "python3 with safetensors.numpy and numpy is not available";

function runPython(script: string, ...args: string[]): void {
  const run = spawnSync("python3", ["-c", script, ...args], { encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr || run.stdout);
}

test("Python safetensors loads our files and writes byte-identical ones", { skip: noPython }, () => {
  const dir = freshDir();
  const numpyDtypes = SAFETENSORS_DTYPES.filter((dtype) => !dtype.startsWith("F8") && dtype !== "BF16");
  const tensors = sampleTensors(numpyDtypes);
  const ours = join(dir, "ours.safetensors");
  writeSafetensors(ours, tensors, { format: "np" });
  const expected = Object.fromEntries(
    tensors.map(({ name, dtype, data }) => [name, [...toFloat32(dtype, new Uint8Array(data.buffer))].map(String)]),
  );
  writeFileSync(join(dir, "expected.json"), JSON.stringify(expected));
  runPython(
    `
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
ours, expected_path, theirs = sys.argv[1:]
loaded = load_file(ours)
expected = json.load(open(expected_path))
assert sorted(loaded) == sorted(expected), sorted(loaded)
for name, values in expected.items():
    array = loaded[name]
    assert array.shape == (2, 3), (name, array.shape)
    actual = array.astype(np.float64).astype(np.float32).ravel().tolist()
    assert actual == [float(np.float32(float(v))) for v in values], (name, actual, values)
with safe_open(ours, framework="np") as f:
    metadata = f.metadata()
assert metadata == {"format": "np"}, metadata
save_file(loaded, theirs, metadata=metadata)
`,
    ours, join(dir, "expected.json"), join(dir, "theirs.safetensors"),
  );
  assert.deepEqual(readFileSync(ours), readFileSync(join(dir, "theirs.safetensors")));

  const sharded = join(dir, "sharded");
  writeShardedSafetensors(sharded, tensors, { maxShardBytes: 40 });
  runPython(
    `
import json, os, sys
from safetensors.numpy import load_file
dir = sys.argv[1]
index = json.load(open(os.path.join(dir, "model.safetensors.index.json")))
names = set()
for shard in sorted(set(index["weight_map"].values())):
    names |= set(load_file(os.path.join(dir, shard)))
assert names == set(index["weight_map"]), names
`,
    sharded,
  );
});

test("f16 conversions agree with numpy bit for bit", { skip: noPython }, () => {
  const dir = freshDir();
  // Random float32 bit patterns biased toward the f16 range, plus exact rounding ties.
  let seed = 12345;
  const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const samples = Float32Array.from({ length: 20000 }, (_, i) => {
    const bits = i % 4 === 0 ? random() : (random() & 0x807fffff) | (((random() % 48) + 96) << 23);
    return fromBits(i % 7 === 0 ? (bits & 0xffffe000) | 0x1000 : bits);
  }).filter((value) => !Number.isNaN(value));
  const allBits = Uint16Array.from({ length: 0x10000 }, (_, bits) => bits);
  writeSafetensors(join(dir, "f16.safetensors"), [
    { name: "f32", dtype: "F32", shape: [samples.length], data: samples },
    { name: "f16", dtype: "F16", shape: [samples.length], data: fromFloat32("F16", samples) },
    { name: "all_bits", dtype: "F16", shape: [0x10000], data: allBits },
    { name: "all_decoded", dtype: "F32", shape: [0x10000], data: toFloat32("F16", new Uint8Array(allBits.buffer)) },
  ]);
  runPython(
    `
import sys
import numpy as np
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
mismatch = np.flatnonzero(t["f32"].astype(np.float16).view(np.uint16) != t["f16"].view(np.uint16))
assert mismatch.size == 0, [(t["f32"][i].view(np.uint32), t["f16"][i].view(np.uint16)) for i in mismatch[:5]]
assert np.array_equal(t["all_bits"].astype(np.float32), t["all_decoded"], equal_nan=True)
`,
    join(dir, "f16.safetensors"),
  );
});
