// GGUF files through ggml's own gguf reader and writer: metadata of every value type, tensor infos
// with PyTorch-order shapes, raw tensor bytes by positioned reads, and f32 values of any tensor type
// ggml can convert, dequantised by a ggml graph on the backend. Tensor names stay as in the file
// (llama.cpp names such as blk.0.attn_q.weight).
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync } from "node:fs";
import type { Backend } from "../engine/backend.ts";
import { Graph } from "../engine/graph.ts";
import { GGUF_TYPE, koffi, type Ggml, type Ptr } from "../engine/native.ts";
import {
  GGML_TYPE, fromTorchShape, isQuantized, toShape4, toTorchShape, type DType, type Shape4, type Tensor,
} from "../engine/tensor.ts";
import { FormatError } from "./errors.ts";
import { replaceAtomically, writeFully } from "./files.ts";

// ---------------------------------------------------------------------------------------------
// Metadata values

export type GgufNumberType = "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64";
/** 64-bit integers are bigints, so that every value survives a read and a write unchanged. */
export type GgufBigIntType = "u64" | "i64";
export type GgufElementType = GgufNumberType | GgufBigIntType | "bool" | "string";

/** A metadata value with its GGUF type, which a writer needs and JS values cannot carry. */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; itemType: GgufNumberType; value: number[] }
  | { type: "array"; itemType: GgufBigIntType; value: bigint[] }
  | { type: "array"; itemType: "bool"; value: boolean[] }
  | { type: "array"; itemType: "string"; value: string[] };

type Storage =
  | typeof Uint8Array | typeof Int8Array | typeof Uint16Array | typeof Int16Array | typeof Uint32Array
  | typeof Int32Array | typeof Float32Array | typeof Float64Array | typeof BigUint64Array | typeof BigInt64Array;

/** GGUF type ids and the typed arrays holding their little-endian elements (bool is one byte). */
const ELEMENTS: Record<Exclude<GgufElementType, "string">, { id: number; storage: Storage }> = {
  u8: { id: GGUF_TYPE.UINT8, storage: Uint8Array },
  i8: { id: GGUF_TYPE.INT8, storage: Int8Array },
  u16: { id: GGUF_TYPE.UINT16, storage: Uint16Array },
  i16: { id: GGUF_TYPE.INT16, storage: Int16Array },
  u32: { id: GGUF_TYPE.UINT32, storage: Uint32Array },
  i32: { id: GGUF_TYPE.INT32, storage: Int32Array },
  f32: { id: GGUF_TYPE.FLOAT32, storage: Float32Array },
  bool: { id: GGUF_TYPE.BOOL, storage: Uint8Array },
  u64: { id: GGUF_TYPE.UINT64, storage: BigUint64Array },
  i64: { id: GGUF_TYPE.INT64, storage: BigInt64Array },
  f64: { id: GGUF_TYPE.FLOAT64, storage: Float64Array },
};
const ELEMENT_BY_ID = new Map<number, GgufElementType>([
  ...Object.entries(ELEMENTS).map(([name, { id }]): [number, GgufElementType] => [id, name as GgufElementType]),
  [GGUF_TYPE.STRING, "string"],
]);

/** ggml aligns tensor data to this unless general.alignment says otherwise (gguf.h). */
const GGUF_DEFAULT_ALIGNMENT = 32;
const ALIGNMENT_KEY = "general.alignment";

// ---------------------------------------------------------------------------------------------
// Reading

export interface GgufTensorInfo {
  readonly name: string;
  /** A tasktune DType, or ggml's own name for a type tasktune does not handle (q8_K, q8_1). */
  readonly ggmlType: DType | (string & {});
  /** ggml order, 4 dims: ne[0] is a row. */
  readonly ne: readonly number[];
  /** PyTorch order. ggml's API does not expose a tensor's n_dims, so trailing 1-dims are dropped, as ggml's writer does. */
  readonly shape: readonly number[];
  /** Absolute position of the tensor's first byte in the file. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

export class GgufFile {
  readonly version: number;
  readonly alignment: number;
  /** Absolute position of the data section; tensor offsets in the file are relative to it. */
  readonly dataOffset: number;
  /** In file order. */
  readonly metadata: Map<string, GgufValue>;
  /** In file order. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  #fd: number | undefined;

  constructor(readonly path: string, readonly backend: Backend) {
    const fd = openSync(path, "r");
    try {
      ({ version: this.version, alignment: this.alignment, dataOffset: this.dataOffset, metadata: this.metadata,
        tensors: this.tensors } = readHeader(backend.ggml, path, fstatSync(fd).size));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#fd = fd;
  }

  info(name: string): GgufTensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new FormatError(this.path, `no tensor named "${name}"`);
    return info;
  }

  /** Exactly the tensor's bytes, as stored, in a fresh buffer. */
  readRaw(name: string): Uint8Array {
    const { byteOffset, byteLength } = this.info(name);
    // A closed descriptor number may already belong to another file, so never read through it.
    if (this.#fd === undefined) throw new Error(`${this.path}: read after close()`);
    const bytes = new Uint8Array(byteLength);
    for (let done = 0; done < byteLength; ) {
      // One read may return less than asked (Linux caps a read near 2 GiB).
      const count = readSync(this.#fd, bytes, done, byteLength - done, byteOffset + done);
      if (count === 0) throw new FormatError(this.path, `tensor "${name}": unexpected end of file at byte ${byteOffset + done}`);
      done += count;
    }
    return bytes;
  }

  /** The tensor's values as f32, in PyTorch (row-major) order. */
  readF32(name: string): Float32Array {
    const info = this.info(name);
    const dtype = info.ggmlType;
    if (!isDType(dtype)) throw new FormatError(this.path, `tensor "${name}" has ggml type ${dtype}, which ggml cannot convert to f32`);
    const raw = this.readRaw(name);
    if (dtype === "f32") return new Float32Array(raw.buffer);
    const Plain = PLAIN_STORAGE[dtype];
    if (Plain) return Float32Array.from(new Plain(raw.buffer), Number);
    if (raw.length === 0) return new Float32Array(0);
    return dequantize(this.backend, dtype, toShape4(info.ne), raw, name);
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

export function openGguf(path: string, backend: Backend): GgufFile {
  return new GgufFile(path, backend);
}

/** The model architecture (general.architecture), which names the file's tensor and key scheme. */
export function ggufArchitecture(file: GgufFile): string {
  const entry = file.metadata.get("general.architecture");
  if (entry?.type !== "string") throw new FormatError(file.path, `has no string "general.architecture" in its metadata`);
  return entry.value;
}

/**
 * ggml's CPU copy kernel aborts on these instead of converting, and converting them in JS is
 * exact up to f32 rounding, so they never go through a graph.
 */
const PLAIN_STORAGE: Partial<Record<DType, new (buffer: ArrayBufferLike) => ArrayLike<number | bigint>>> = {
  f64: Float64Array, i8: Int8Array, i16: Int16Array, i32: Int32Array, i64: BigInt64Array,
};

function isDType(type: string): type is DType {
  return Object.hasOwn(GGML_TYPE, type);
}

interface GgufHeader {
  version: number;
  alignment: number;
  dataOffset: number;
  metadata: Map<string, GgufValue>;
  tensors: Map<string, GgufTensorInfo>;
}

function readHeader(ggml: Ggml, path: string, fileSize: number): GgufHeader {
  // Without a ggml context ggml reads only the header; tensor data stays on disk for readRaw.
  const ctx = ggml.gguf_init_from_file(path, { no_alloc: true, ctx: null });
  if (!ctx) throw new FormatError(path, "not a GGUF file or corrupt (ggml logged the reason to stderr)");
  try {
    const dataOffset = ggml.gguf_get_data_offset(ctx);
    const metadata = new Map<string, GgufValue>();
    for (let id = 0; id < ggml.gguf_get_n_kv(ctx); id++) metadata.set(ggml.gguf_get_key(ctx, id), readValue(ggml, ctx, id));
    const tensors = new Map<string, GgufTensorInfo>();
    for (let id = 0; id < ggml.gguf_get_n_tensors(ctx); id++) {
      const info = readTensorInfo(ggml, ctx, id, dataOffset);
      // ggml checks the data layout but, reading no data, not that the file holds it.
      if (info.byteOffset + info.byteLength > fileSize) {
        throw new FormatError(path, `tensor "${info.name}" ends at byte ${info.byteOffset + info.byteLength} ` +
          `but the file has ${fileSize} bytes (truncated?)`);
      }
      tensors.set(info.name, info);
    }
    return { version: ggml.gguf_get_version(ctx), alignment: ggml.gguf_get_alignment(ctx), dataOffset, metadata, tensors };
  } finally {
    ggml.gguf_free(ctx);
  }
}

function readValue(ggml: Ggml, ctx: Ptr, id: number): GgufValue {
  const typeId = ggml.gguf_get_kv_type(ctx, id);
  if (typeId === GGUF_TYPE.ARRAY) {
    const itemType = ELEMENT_BY_ID.get(ggml.gguf_get_arr_type(ctx, id))!;
    const n = ggml.gguf_get_arr_n(ctx, id);
    const value = itemType === "string"
      ? Array.from({ length: n }, (_, i) => ggml.gguf_get_arr_str(ctx, id, i))
      : decodeElements(ggml.gguf_get_arr_data(ctx, id), itemType, n);
    return { type: "array", itemType, value } as GgufValue;
  }
  // ggml's reader accepts no other type ids, so the lookups cannot miss.
  const type = ELEMENT_BY_ID.get(typeId)!;
  if (type === "string") return { type, value: ggml.gguf_get_val_str(ctx, id) };
  return { type, value: decodeElements(ggml.gguf_get_val_data(ctx, id), type, 1)[0] } as GgufValue;
}

/** Copies n elements out of ggml's memory, which gguf_free releases. */
function decodeElements(ptr: Ptr, type: Exclude<GgufElementType, "string">, n: number): number[] | bigint[] | boolean[] {
  if (n === 0) return [];
  const { storage: Storage } = ELEMENTS[type];
  const values = new Storage(koffi.view(ptr, n * Storage.BYTES_PER_ELEMENT).slice(0));
  if (type === "bool") return Array.from(values as Uint8Array, (v) => v !== 0);
  return Array.from(values as ArrayLike<number | bigint>) as number[] | bigint[];
}

function readTensorInfo(ggml: Ggml, ctx: Ptr, id: number, dataOffset: number): GgufTensorInfo {
  const typeId = ggml.gguf_get_tensor_type(ctx, id);
  const ggmlType = Object.entries(GGML_TYPE).find(([, v]) => v === typeId)?.[0] ?? ggml.ggml_type_name(typeId);
  const ne = Array.from(koffi.decode(ggml.gguf_get_tensor_ne(ctx, id), koffi.array("int64_t", 4)) as ArrayLike<number | bigint>, Number);
  return {
    name: ggml.gguf_get_tensor_name(ctx, id),
    ggmlType,
    ne,
    shape: toTorchShape(ne),
    byteOffset: dataOffset + ggml.gguf_get_tensor_offset(ctx, id),
    byteLength: ggml.gguf_get_tensor_size(ctx, id),
  };
}

/** Converts with ggml's own kernels, so that values match what ggml computes with. */
function dequantize(backend: Backend, dtype: DType, ne: Shape4, raw: Uint8Array, name: string): Float32Array {
  const g = new Graph(backend, { maxNodes: 8 });
  try {
    const x = g.input(dtype, ne, name);
    let y = g.cast(x, "f32");
    let rows: Tensor | undefined;
    // Some backends (CUDA for k-quants, for one) cannot copy out of a quantized type but can get_rows from it.
    if (!backend.ggml.ggml_backend_supports_op(backend.handle, y.ptr)) {
      rows = g.input("i32", [ne[1], ne[2], ne[3]], "rows");
      y = g.getRows(x, rows);
    }
    g.output(y);
    g.allocate();
    x.setAll(raw);
    rows?.setAll(Int32Array.from({ length: ne[1] * ne[2] * ne[3] }, (_, i) => i % ne[1]));
    g.compute();
    return y.getF32();
  } finally {
    g.free();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

export type GgufTensorData = {
  name: string;
  dtype: DType;
  /** The tensor's bytes as ggml stores them (see quantize for quantized types). */
  data: ArrayBufferView;
} & ({ ne: readonly number[]; shape?: never } | { shape: readonly number[]; ne?: never });

export interface GgufContents {
  metadata?: ReadonlyMap<string, GgufValue> | Readonly<Record<string, GgufValue>>;
  tensors?: readonly GgufTensorData[];
}

/**
 * Writes a GGUF file atomically: a temporary file in the same directory, renamed into place.
 * ggml writes the header; tensor data is written here, one tensor at a time, because ggml's
 * gguf_set_tensor_data keeps the pointer it is given until the write, while koffi's pointers
 * into JS buffers are valid only during a call.
 */
export function writeGguf(path: string, contents: GgufContents, ggml: Ggml): void {
  const metadata = contents.metadata instanceof Map ? [...contents.metadata] : Object.entries(contents.metadata ?? {});
  const tensors = contents.tensors ?? [];
  const ctx = ggml.gguf_init_empty();
  const tensorCtx = ggml.ggml_init({ mem_size: Math.max(1, tensors.length) * ggml.ggml_tensor_overhead(), mem_buffer: null, no_alloc: true });
  try {
    for (const [key, value] of metadata) setValue(ggml, ctx, path, key, value);
    const names = new Set<string>();
    const bytes = tensors.map((tensor) => addTensor(ggml, ctx, tensorCtx, path, tensor, names));
    replaceAtomically(path, (temp) => {
      if (!ggml.gguf_write_to_file(ctx, temp, true)) throw new Error(`${temp}: ggml could not write the GGUF header`);
      const fd = openSync(temp, "r+");
      try {
        // ggml pads the header to the alignment, so the data section starts where it ends.
        const dataOffset = fstatSync(fd).size;
        let end = dataOffset;
        bytes.forEach((data, id) => {
          const position = dataOffset + ggml.gguf_get_tensor_offset(ctx, id);
          writeFully(fd, data, position);
          end = position + padTo(data.length, GGUF_DEFAULT_ALIGNMENT);
        });
        // Zero-fills the padding after the last tensor; the gaps between tensors already read as zeros.
        ftruncateSync(fd, end);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    });
  } finally {
    ggml.ggml_free(tensorCtx);
    ggml.gguf_free(ctx);
  }
}

const padTo = (n: number, alignment: number) => Math.ceil(n / alignment) * alignment;

/** Stores a value under key, first checking what ggml would abort on or store wrongly. */
function setValue(ggml: Ggml, ctx: Ptr, file: string, key: string, entry: GgufValue): void {
  const invalid = (problem: string) => new FormatError(file, `metadata "${key}": ${problem}`);
  if (key === "") throw invalid("keys must not be empty");
  // ggml lays tensor data out at its default alignment whatever this key says, so any other value would break the file.
  if (key === ALIGNMENT_KEY && !(entry.type === "u32" && entry.value === GGUF_DEFAULT_ALIGNMENT)) {
    throw invalid(`ggml's writer supports only u32 ${GGUF_DEFAULT_ALIGNMENT}`);
  }
  switch (entry.type) {
    case "string":
      return ggml.gguf_set_val_str(ctx, key, entry.value);
    case "bool":
      return ggml.gguf_set_val_bool(ctx, key, entry.value);
    case "u64":
    case "i64":
      checkRange(invalid, entry.type, [entry.value]);
      return ggml[`gguf_set_val_${entry.type}`](ctx, key, entry.value);
    case "array": {
      if (entry.itemType === "string") return ggml.gguf_set_arr_str(ctx, key, entry.value, entry.value.length);
      checkRange(invalid, entry.itemType, entry.value);
      const { id, storage } = ELEMENTS[entry.itemType];
      const encoded = (storage as unknown as { from(values: ArrayLike<unknown>): ArrayBufferView }).from(entry.value);
      return ggml.gguf_set_arr_data(ctx, key, id, encoded, entry.value.length);
    }
    default:
      checkRange(invalid, entry.type, [entry.value]);
      return ggml[`gguf_set_val_${entry.type}`](ctx, key, entry.value);
  }
}

/** koffi would store integers out of range, and fractions, wrapped or truncated. */
function checkRange(invalid: (problem: string) => Error, type: Exclude<GgufElementType, "string">, values: readonly unknown[]): void {
  if (type === "bool" || type === "f32" || type === "f64") return;
  const { storage } = ELEMENTS[type];
  values.forEach((value, i) => {
    let fits: boolean;
    try {
      fits = storage.of(value as never)[0] === value;
    } catch {
      fits = false; // a number for a 64-bit type, or a bigint for a narrower one
    }
    if (!fits) throw invalid(`${String(value)} is not a valid ${type}${values.length > 1 ? ` (element ${i})` : ""}`);
  });
}

/** Adds the tensor's info to ctx and returns its bytes, checked against its type and shape. */
function addTensor(ggml: Ggml, ctx: Ptr, tensorCtx: Ptr, file: string, tensor: GgufTensorData, names: Set<string>): Uint8Array {
  const { name, dtype, data } = tensor;
  const invalid = (problem: string) => new FormatError(file, `tensor "${name}": ${problem}`);
  if (!isDType(dtype)) throw invalid(`unknown dtype ${JSON.stringify(dtype)}`);
  // ggml truncates longer names silently and aborts on a duplicate.
  if (Buffer.byteLength(name) >= 64) throw invalid("names must be shorter than 64 bytes");
  if (names.has(name)) throw invalid("the name is used twice");
  const ne = checkedNe(invalid, tensor);
  const type = GGML_TYPE[dtype];
  if (ne[0] % ggml.ggml_blck_size(type) !== 0) {
    throw invalid(`rows of ${ne[0]} elements cannot be stored as ${dtype} (blocks of ${ggml.ggml_blck_size(type)})`);
  }
  const byteLength = ggml.ggml_row_size(type, ne[0]) * ne[1] * ne[2] * ne[3];
  if (data.byteLength !== byteLength) throw invalid(`data has ${data.byteLength} bytes but ${dtype} [${ne.join(", ")}] takes ${byteLength}`);
  const t = ggml.ggml_new_tensor_4d(tensorCtx, type, ...ne);
  ggml.ggml_set_name(t, name);
  ggml.gguf_add_tensor(ctx, t);
  names.add(name);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function checkedNe(invalid: (problem: string) => Error, tensor: GgufTensorData): Shape4 {
  try {
    return tensor.ne ? toShape4(tensor.ne) : fromTorchShape(tensor.shape!);
  } catch (err) {
    throw invalid((err as Error).message);
  }
}

// ---------------------------------------------------------------------------------------------
// Quantizing

/**
 * The bytes of a tensor of ggml shape `ne` stored as `dtype` (f32, f16, bf16 or a quantized
 * type), made by ggml's reference quantizers.
 */
export function quantize(values: Float32Array, ne: readonly number[], dtype: DType, ggml: Ggml): Uint8Array {
  const [n0, n1, n2, n3] = toShape4(ne);
  const type = GGML_TYPE[dtype];
  const fail = (problem: string): never => {
    throw new Error(`quantize to ${dtype} [${ne.join(", ")}]: ${problem}`);
  };
  if (!isQuantized(dtype) && dtype !== "f32" && dtype !== "f16" && dtype !== "bf16") fail("not a float or quantized type");
  if (values.length !== n0 * n1 * n2 * n3) fail(`got ${values.length} values`);
  if (n0 % ggml.ggml_blck_size(type) !== 0) fail(`rows must be a multiple of ${ggml.ggml_blck_size(type)} elements`);
  if (ggml.ggml_quantize_requires_imatrix(type)) fail("this type needs an importance matrix");
  const rows = n1 * n2 * n3;
  const out = new Uint8Array(ggml.ggml_row_size(type, n0) * rows);
  ggml.ggml_quantize_chunk(type, values, out, 0, rows, n0, null);
  return out;
}
