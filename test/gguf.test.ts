import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { seededNormal, seededUniform } from "../src/engine/random.ts";
import { fromFloat32, toFloat32 } from "../src/io/dtype.ts";
import { FormatError } from "../src/io/errors.ts";
import {
  ggufArchitecture, openGguf, quantize, writeGguf, type GgufContents, type GgufTensorData, type GgufValue,
} from "../src/io/gguf.ts";
import { testBackend } from "./support/backend.ts";
import { tempDirs } from "./support/tmp.ts";

const freshDir = tempDirs("tasktune-gguf");

const backend = await testBackend();
const { ggml } = backend;

const METADATA: Record<string, GgufValue> = {
  "general.architecture": { type: "string", value: "llama" },
  "general.alignment": { type: "u32", value: 32 },
  u8: { type: "u8", value: 255 },
  i8: { type: "i8", value: -128 },
  u16: { type: "u16", value: 65535 },
  i16: { type: "i16", value: -32768 },
  u32: { type: "u32", value: 4294967295 },
  i32: { type: "i32", value: -2147483648 },
  f32: { type: "f32", value: Math.fround(0.1) },
  f64: { type: "f64", value: 0.1 },
  u64: { type: "u64", value: 2n ** 64n - 1n },
  i64: { type: "i64", value: -(2n ** 63n) },
  true: { type: "bool", value: true },
  false: { type: "bool", value: false },
  string: { type: "string", value: "héllo, wörld ✓" },
  empty: { type: "string", value: "" },
  "arr.u8": { type: "array", itemType: "u8", value: [0, 1, 255] },
  "arr.i8": { type: "array", itemType: "i8", value: [-128, 0, 127] },
  "arr.u16": { type: "array", itemType: "u16", value: [0, 65535] },
  "arr.i16": { type: "array", itemType: "i16", value: [-32768, 32767] },
  "arr.u32": { type: "array", itemType: "u32", value: [0, 4294967295] },
  "arr.i32": { type: "array", itemType: "i32", value: [-2147483648, 2147483647] },
  "arr.f32": { type: "array", itemType: "f32", value: [1.5, -0.25, Math.fround(1e-30)] },
  "arr.f64": { type: "array", itemType: "f64", value: [Math.PI, -1e300] },
  "arr.u64": { type: "array", itemType: "u64", value: [0n, 2n ** 64n - 1n] },
  "arr.i64": { type: "array", itemType: "i64", value: [-(2n ** 63n), 2n ** 63n - 1n] },
  "arr.bool": { type: "array", itemType: "bool", value: [true, false, true] },
  "arr.string": { type: "array", itemType: "string", value: ["<s>", "</s>", "▁the", ""] },
  "arr.empty": { type: "array", itemType: "i32", value: [] },
  "arr.empty_string": { type: "array", itemType: "string", value: [] },
};

function normal(count: number, seed: number): Float32Array {
  const next = seededNormal(seed);
  return Float32Array.from({ length: count }, next);
}

/** Largest error each quantized type may make on a block of values (ggml's reference quantizers). */
const QUANT_BOUNDS = {
  // One scale per 32 values, |q| <= 127: error at most half a step, doubled for the f16 scale.
  q8_0: { block: 32, bound: (v: Float32Array) => Math.max(...v.map(Math.abs)) / 127 },
  // Steps of amax/8 in [-8, 7]: the clamp at 7 costs a full step, plus the f16 scale's rounding.
  q4_0: { block: 32, bound: (v: Float32Array) => (Math.max(...v.map(Math.abs)) / 8) * 1.01 },
  // 4-bit steps over each 32-value sub-block's range with 6-bit scales per 256: one step of the widest range.
  q4_k: { block: 256, bound: (v: Float32Array) => (Math.max(...v) - Math.min(...v)) / 15 },
} as const;

function sampleFile(): { contents: GgufContents; values: Map<string, Float32Array> } {
  const values = new Map<string, Float32Array>();
  const tensors: GgufTensorData[] = [];
  const add = (name: string, dtype: keyof typeof QUANT_BOUNDS | "f32" | "f16" | "bf16", shape: number[], seed: number) => {
    const v = normal(shape.reduce((a, b) => a * b, 1), seed);
    values.set(name, v);
    tensors.push({ name, dtype, shape, data: quantize(v, [...shape].reverse(), dtype, ggml) });
  };
  add("token_embd.weight", "f32", [3, 5], 1);
  add("blk.0.attn_norm.weight", "f32", [7], 2);
  add("blk.0.attn_q.weight", "f16", [2, 3, 4], 3);
  add("blk.0.attn_k.weight", "bf16", [4, 6], 4);
  add("blk.0.attn_v.weight", "q8_0", [2, 3, 64], 5);
  add("blk.0.ffn_up.weight", "q4_0", [3, 96], 6);
  add("blk.0.ffn_down.weight", "q4_k", [4, 512], 7);
  return { contents: { metadata: METADATA, tensors }, values };
}

test("round-trips metadata of every type, in order, with version and alignment", () => {
  const path = join(freshDir(), "meta.gguf");
  writeGguf(path, sampleFile().contents, ggml);
  const file = openGguf(path, backend);
  try {
    assert.equal(file.version, 3);
    assert.equal(file.alignment, 32);
    assert.deepEqual([...file.metadata], Object.entries(METADATA));
    assert.equal(ggufArchitecture(file), "llama");
  } finally {
    file.close();
  }
});

test("reads tensor infos in PyTorch order with absolute, aligned offsets and the exact bytes written", () => {
  const path = join(freshDir(), "infos.gguf");
  const { contents } = sampleFile();
  writeGguf(path, contents, ggml);
  const file = openGguf(path, backend);
  try {
    assert.deepEqual([...file.tensors.keys()], contents.tensors!.map((t) => t.name));
    const bytes = readFileSync(path);
    for (const t of contents.tensors!) {
      const info = file.info(t.name);
      assert.equal(info.ggmlType, t.dtype, t.name);
      assert.deepEqual(info.shape, t.shape, t.name);
      assert.deepEqual(info.ne, [...t.shape!].reverse().concat([1, 1, 1]).slice(0, 4), t.name);
      assert.equal((info.byteOffset - file.dataOffset) % 32, 0, t.name);
      const expected = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      assert.deepEqual(file.readRaw(t.name), expected, t.name);
      assert.deepEqual(new Uint8Array(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength)), expected, t.name);
    }
    assert.equal(bytes.length % 32, 0, "the data section is padded to the alignment, as ggml pads it");
  } finally {
    file.close();
  }
});

test("readF32 is exact for f32/f16/bf16 and within quantization error for q8_0/q4_0/q4_k", () => {
  const path = join(freshDir(), "values.gguf");
  const { contents, values } = sampleFile();
  writeGguf(path, contents, ggml);
  const file = openGguf(path, backend);
  try {
    assert.deepEqual(file.readF32("token_embd.weight"), values.get("token_embd.weight"));
    assert.deepEqual(file.readF32("blk.0.attn_norm.weight"), values.get("blk.0.attn_norm.weight"));
    // ggml's f16/bf16 rounding and widening agree bit for bit with tasktune's own conversions.
    for (const [name, dtype] of [["blk.0.attn_q.weight", "F16"], ["blk.0.attn_k.weight", "BF16"]] as const) {
      const stored = new Uint8Array(fromFloat32(dtype, values.get(name)!).buffer);
      assert.deepEqual(file.readRaw(name), stored, name);
      assert.deepEqual(file.readF32(name), toFloat32(dtype, stored), name);
    }
    for (const t of contents.tensors!) {
      const bounds = QUANT_BOUNDS[t.dtype as keyof typeof QUANT_BOUNDS];
      if (!bounds) continue;
      const original = values.get(t.name)!;
      const read = file.readF32(t.name);
      assert.equal(read.length, original.length);
      for (let start = 0; start < original.length; start += bounds.block) {
        const bound = bounds.bound(original.subarray(start, start + bounds.block));
        for (let i = start; i < start + bounds.block; i++) {
          assert.ok(Math.abs(read[i]! - original[i]!) <= bound, `${t.name}[${i}]: ${read[i]} vs ${original[i]} (bound ${bound})`);
        }
      }
      assert.deepEqual(file.readF32(t.name), read, `${t.name}: dequantising twice gives the same values`);
    }
  } finally {
    file.close();
  }
});

test("readF32 converts integer and f64 tensors", () => {
  const path = join(freshDir(), "ints.gguf");
  const tensors: GgufTensorData[] = [
    { name: "i8", dtype: "i8", shape: [3], data: Int8Array.of(-128, 0, 127) },
    { name: "i16", dtype: "i16", shape: [2], data: Int16Array.of(-32768, 32767) },
    { name: "i32", dtype: "i32", ne: [2, 2], data: Int32Array.of(1, -2, 3, 2 ** 30) },
    { name: "i64", dtype: "i64", shape: [2], data: BigInt64Array.of(-5n, 2n ** 40n) },
    { name: "f64", dtype: "f64", shape: [2], data: Float64Array.of(0.1, -3) },
  ];
  writeGguf(path, { tensors }, ggml);
  const file = openGguf(path, backend);
  try {
    assert.deepEqual(file.readF32("i8"), Float32Array.of(-128, 0, 127));
    assert.deepEqual(file.readF32("i16"), Float32Array.of(-32768, 32767));
    assert.deepEqual(file.info("i32").shape, [2, 2]);
    assert.deepEqual(file.readF32("i32"), Float32Array.of(1, -2, 3, 2 ** 30));
    assert.deepEqual(file.readF32("i64"), Float32Array.of(-5, 2 ** 40));
    assert.deepEqual(file.readF32("f64"), Float32Array.of(0.1, -3));
  } finally {
    file.close();
  }
});

test("shapes drop trailing ggml 1-dims, as ggml's writer stores them", () => {
  const path = join(freshDir(), "shapes.gguf");
  const one = Float32Array.of(1, 2, 3, 4);
  writeGguf(path, {
    tensors: [
      { name: "column", dtype: "f32", shape: [4, 1], data: one },
      { name: "row", dtype: "f32", shape: [1, 4], data: one },
      { name: "scalar", dtype: "f32", shape: [], data: Float32Array.of(7) },
    ],
  }, ggml);
  const file = openGguf(path, backend);
  try {
    assert.deepEqual(file.info("column").shape, [4, 1]);
    assert.deepEqual(file.info("row").shape, [4]);
    assert.deepEqual(file.info("scalar").shape, [1]);
  } finally {
    file.close();
  }
});

test("a file without tensors round-trips its metadata", () => {
  const path = join(freshDir(), "empty.gguf");
  writeGguf(path, { metadata: new Map([["general.architecture", { type: "string", value: "gpt2" } as GgufValue]]) }, ggml);
  const file = openGguf(path, backend);
  try {
    assert.equal(file.tensors.size, 0);
    assert.equal(ggufArchitecture(file), "gpt2");
  } finally {
    file.close();
  }
});

const formatError = (file: string, pattern: RegExp) => (err: unknown) =>
  err instanceof FormatError && err.file === file && pattern.test(err.message);

test("rejects files that are not GGUF, and truncated ones, naming the file", () => {
  const dir = freshDir();
  const random = join(dir, "random.gguf");
  const next = seededUniform(11);
  writeFileSync(random, Uint8Array.from({ length: 4096 }, () => Math.floor(next() * 256)));
  assert.throws(() => openGguf(random, backend), formatError(random, /not a GGUF file or corrupt/));

  const good = join(dir, "good.gguf");
  writeGguf(good, sampleFile().contents, ggml);
  const size = readFileSync(good).length;

  const cutData = join(dir, "cut-data.gguf");
  writeFileSync(cutData, readFileSync(good).subarray(0, size - 100));
  assert.throws(() => openGguf(cutData, backend), formatError(cutData, /"blk\.0\.ffn_down\.weight" ends at byte \d+ but the file has \d+ bytes \(truncated\?\)/));

  const cutHeader = join(dir, "cut-header.gguf");
  writeFileSync(cutHeader, readFileSync(good));
  truncateSync(cutHeader, 200);
  assert.throws(() => openGguf(cutHeader, backend), formatError(cutHeader, /not a GGUF file or corrupt/));

  assert.throws(() => openGguf(join(dir, "missing.gguf"), backend), /ENOENT/);
});

test("missing tensors, reads after close and a missing architecture are clear errors", () => {
  const path = join(freshDir(), "errors.gguf");
  writeGguf(path, { tensors: [{ name: "a", dtype: "f32", shape: [2], data: Float32Array.of(1, 2) }] }, ggml);
  const file = openGguf(path, backend);
  for (const read of [(n: string) => file.readRaw(n), (n: string) => file.readF32(n), (n: string) => file.info(n)]) {
    assert.throws(() => read("blk.9.nope"), formatError(path, /no tensor named "blk\.9\.nope"/));
  }
  assert.throws(() => ggufArchitecture(file), formatError(path, /general\.architecture/));
  file.close();
  assert.throws(() => file.readRaw("a"), /after close/);
});

test("writing checks values, names, shapes and sizes, and leaves no file behind on failure", () => {
  const dir = freshDir();
  const path = join(dir, "out.gguf");
  writeGguf(path, { metadata: { keep: { type: "u8", value: 1 } } }, ggml);
  const before = readFileSync(path);
  const f32 = (name: string, data = Float32Array.of(1, 2)): GgufTensorData => ({ name, dtype: "f32", shape: [2], data });
  const cases: [GgufContents, RegExp][] = [
    [{ metadata: { x: { type: "u8", value: 256 } } }, /"x": 256 is not a valid u8/],
    [{ metadata: { x: { type: "i32", value: 1.5 } } }, /"x": 1\.5 is not a valid i32/],
    [{ metadata: { x: { type: "u64", value: -1n } } }, /"x": -1 is not a valid u64/],
    [{ metadata: { x: { type: "array", itemType: "i8", value: [1, 200] } } }, /"x": 200 is not a valid i8 \(element 1\)/],
    [{ metadata: { "": { type: "u8", value: 1 } } }, /keys must not be empty/],
    [{ metadata: { "general.alignment": { type: "u32", value: 64 } } }, /general\.alignment.*only u32 32/],
    [{ tensors: [f32("a"), f32("a")] }, /"a": the name is used twice/],
    [{ tensors: [f32("x".repeat(64))] }, /shorter than 64 bytes/],
    [{ tensors: [f32("short", Float32Array.of(1))] }, /"short": data has 4 bytes but f32 \[2, 1, 1, 1\] takes 8/],
    [{ tensors: [{ name: "q", dtype: "q8_0", shape: [16], data: new Uint8Array(17) }] }, /"q": rows of 16 elements cannot be stored as q8_0 \(blocks of 32\)/],
    [{ tensors: [{ name: "z", dtype: "f32", shape: [0], data: new Float32Array(0) }] }, /"z": dims must be positive/],
  ];
  for (const [contents, pattern] of cases) {
    assert.throws(() => writeGguf(path, contents, ggml), formatError(path, pattern));
  }
  assert.deepEqual(readFileSync(path), before);
  // A rename over a non-empty directory fails after the temporary file was written.
  const occupied = join(dir, "occupied");
  mkdirSync(occupied);
  writeFileSync(join(occupied, "x"), "");
  assert.throws(() => writeGguf(occupied, { tensors: [f32("a")] }, ggml), /EISDIR|ENOTEMPTY|EEXIST/);
  assert.deepEqual(readdirSync(dir).sort(), ["occupied", "out.gguf"]);
});

test("quantize refuses types it cannot make", () => {
  const values = new Float32Array(256);
  assert.throws(() => quantize(values, [256], "iq2_xxs", ggml), /importance matrix/);
  assert.throws(() => quantize(values, [256], "i32", ggml), /not a float or quantized type/);
  assert.throws(() => quantize(values, [128, 2], "q4_k", ggml), /multiple of 256/);
  assert.throws(() => quantize(values, [64], "q8_0", ggml), /got 256 values/);
});
