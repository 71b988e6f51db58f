// Safetensors files and Hugging Face sharded checkpoints: lazy reads of one tensor at a time,
// and atomic writes whose memory use stays near one tensor, so merges can stream 7B models.
//
// Layout: u64 little-endian header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}},
// then the data section that the offsets are relative to.
import {
  closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, readdirSync,
  renameSync, rmSync, statSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import {
  SAFETENSORS_DTYPES, dtypeSize, isIntegerDtype, isSafetensorsDtype, isStorageFor, toFloat32, viewAs,
  type SafetensorsDtype, type StorageArray,
} from "./dtype.ts";
import { FormatError } from "./errors.ts";
import { replaceAtomically, syncDirectory, tempName, writeFully } from "./files.ts";

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** The file holding the tensor: one shard of a sharded checkpoint. */
  file: string;
  /** Absolute position of the tensor's first byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

export interface TensorData {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /** The dtype's storage array (F16/BF16 as Uint16Array bits) or its raw little-endian bytes. */
  data: StorageArray;
}

export interface ShardingOptions {
  /** Tensor bytes per shard; a larger tensor gets a shard of its own. */
  maxShardBytes?: number;
  /** Output names: `<baseName>.safetensors` or `<baseName>-00001-of-0000N.safetensors` plus an index. */
  baseName?: string;
  /** Stored in every shard; transformers rejects shards whose "format" is not a framework it knows. */
  metadata?: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** The read API shared by single files and sharded checkpoints. */
export abstract class TensorReader {
  abstract readonly path: string;
  abstract readonly metadata: Record<string, string>;
  /** In file order: by shard, then by offset. */
  abstract readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Reads exactly the tensor's bytes from disk into a fresh, aligned buffer. */
  abstract readRaw(name: string): Uint8Array;
  abstract close(): void;

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw missingTensor(this.path, name);
    return info;
  }

  readF32(name: string): Float32Array {
    return toFloat32(this.info(name).dtype, this.readRaw(name));
  }

  /** An integer tensor as int32; fails on values int32 cannot hold instead of wrapping them. */
  readI32(name: string): Int32Array {
    const { dtype, file } = this.info(name);
    if (!isIntegerDtype(dtype)) throw new FormatError(file, `tensor "${name}" has dtype ${dtype}, not an integer dtype`);
    const values = viewAs(dtype, this.readRaw(name));
    if (values instanceof Int32Array) return values;
    const out = new Int32Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const value = Number(values[i]);
      if (value < -0x80000000 || value > 0x7fffffff) {
        throw new FormatError(file, `tensor "${name}" element ${i} (${values[i]}) does not fit in int32`);
      }
      out[i] = value;
    }
    return out;
  }
}

export class SafetensorsFile extends TensorReader {
  readonly metadata: Record<string, string>;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  #fd: number | undefined;

  constructor(readonly path: string) {
    super();
    const fd = openSync(path, "r");
    try {
      ({ metadata: this.metadata, tensors: this.tensors } = readHeader(fd, path));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#fd = fd;
  }

  readRaw(name: string): Uint8Array {
    const { byteOffset, byteLength } = this.info(name);
    // A closed descriptor number may already belong to another file, so never read through it.
    if (this.#fd === undefined) throw new Error(`${this.path}: read after close()`);
    const bytes = new Uint8Array(byteLength);
    readFully(this.#fd, bytes, byteOffset, this.path);
    return bytes;
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

/** The union of the tensors of one or more safetensors files, each read from its own file. */
export class Checkpoint extends TensorReader {
  readonly metadata: Record<string, string>;
  readonly tensors = new Map<string, TensorInfo>();
  readonly #owners = new Map<string, SafetensorsFile>();

  constructor(readonly path: string, readonly files: readonly SafetensorsFile[]) {
    super();
    this.metadata = Object.assign({}, ...files.map((file) => file.metadata));
    for (const file of files) {
      for (const [name, info] of file.tensors) {
        const owner = this.#owners.get(name);
        if (owner) throw new FormatError(file.path, `tensor "${name}" is also in ${owner.path}`);
        this.tensors.set(name, info);
        this.#owners.set(name, file);
      }
    }
  }

  readRaw(name: string): Uint8Array {
    const owner = this.#owners.get(name);
    if (!owner) throw missingTensor(this.path, name);
    return owner.readRaw(name);
  }

  close(): void {
    for (const file of this.files) file.close();
  }
}

export function openSafetensors(path: string): SafetensorsFile {
  return new SafetensorsFile(path);
}

/**
 * Opens `<fileName>` or the sharded `<fileName>.index.json` in a directory, or the given
 * safetensors or index file. A single file wins over an index, as in transformers.
 */
export function openCheckpoint(location: string, fileName = "model.safetensors"): Checkpoint {
  const path = statSync(location).isDirectory() ? findCheckpointFile(location, fileName) : location;
  return path.endsWith(".index.json") ? openSharded(path) : new Checkpoint(path, [openSafetensors(path)]);
}

function findCheckpointFile(dir: string, fileName: string): string {
  for (const candidate of [fileName, `${fileName}.index.json`]) {
    if (existsSync(join(dir, candidate))) return join(dir, candidate);
  }
  throw new FormatError(dir, `has neither ${fileName} nor ${fileName}.index.json`);
}

function openSharded(indexPath: string): Checkpoint {
  const weightMap = readWeightMap(indexPath);
  const dir = dirname(indexPath);
  const files: SafetensorsFile[] = [];
  try {
    for (const shard of [...new Set(Object.values(weightMap))].sort()) {
      if (!existsSync(join(dir, shard))) throw new FormatError(indexPath, `shard "${shard}" in weight_map does not exist`);
      files.push(openSafetensors(join(dir, shard)));
    }
    const checkpoint = new Checkpoint(indexPath, files);
    for (const [name, shard] of Object.entries(weightMap)) {
      if (checkpoint.tensors.get(name)?.file !== join(dir, shard)) {
        throw new FormatError(join(dir, shard), `tensor "${name}" is listed in ${basename(indexPath)} but absent from this shard`);
      }
    }
    return checkpoint;
  } catch (err) {
    for (const file of files) file.close();
    throw err;
  }
}

function readWeightMap(indexPath: string): Record<string, string> {
  const text = readFileSync(indexPath, "utf8");
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (err) {
    throw new FormatError(indexPath, `not valid JSON: ${(err as Error).message}`);
  }
  const weightMap = isObject(index) ? index.weight_map : undefined;
  if (!isObject(weightMap) || !Object.values(weightMap).every((file) => typeof file === "string" && file === basename(file))) {
    throw new FormatError(indexPath, `"weight_map" must map tensor names to file names in the same directory`);
  }
  return weightMap as Record<string, string>;
}

function readHeader(fd: number, path: string): Pick<SafetensorsFile, "metadata" | "tensors"> {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw new FormatError(path, `${fileSize} bytes is too short for the 8-byte header length`);
  const prefix = new Uint8Array(8);
  readFully(fd, prefix, 0, path);
  const headerLength = new DataView(prefix.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(fileSize - 8)) {
    throw new FormatError(path, `header length ${headerLength} exceeds the ${fileSize - 8} bytes that follow it`);
  }
  const headerBytes = new Uint8Array(Number(headerLength));
  readFully(fd, headerBytes, 8, path);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new FormatError(path, `header is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(header)) throw new FormatError(path, "header is not a JSON object");

  const dataStart = 8 + headerBytes.length;
  let metadata: Record<string, string> = {};
  const entries: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") metadata = parseMetadata(entry, path);
    else entries.push(parseEntry(name, entry, path, dataStart, fileSize - dataStart));
  }
  entries.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  for (let i = 1; i < entries.length; i++) {
    const [previous, current] = [entries[i - 1]!, entries[i]!];
    if (current.byteOffset < previous.byteOffset + previous.byteLength) {
      throw new FormatError(path, `tensors "${previous.name}" and "${current.name}" overlap`);
    }
  }
  return { metadata, tensors: new Map(entries.map((entry) => [entry.name, entry])) };
}

function parseMetadata(value: unknown, path: string): Record<string, string> {
  if (!isObject(value) || !Object.values(value).every((item) => typeof item === "string")) {
    throw new FormatError(path, `"__metadata__" must map strings to strings`);
  }
  return value as Record<string, string>;
}

function parseEntry(name: string, entry: unknown, path: string, dataStart: number, dataLength: number): TensorInfo {
  const invalid = (problem: string) => new FormatError(path, `tensor "${name}": ${problem}`);
  if (!isObject(entry)) throw invalid("header entry is not an object");
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isSafetensorsDtype(dtype)) throw invalid(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!isShape(shape)) throw invalid(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
    throw invalid(`data_offsets ${JSON.stringify(offsets)} is not a [begin, end] pair`);
  }
  const [begin, end] = offsets as [number, number];
  const byteLength = elementCount(shape) * dtypeSize(dtype);
  if (end - begin !== byteLength) {
    throw invalid(`data_offsets span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} takes ${byteLength}`);
  }
  if (end > dataLength) {
    throw invalid(`data_offsets [${begin}, ${end}] run past the ${dataLength}-byte data section (truncated file?)`);
  }
  return { name, dtype, shape, file: path, byteOffset: dataStart + begin, byteLength };
}

function missingTensor(path: string, name: string): FormatError {
  return new FormatError(path, `no tensor named "${name}"`);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Writes one safetensors file atomically, laid out exactly as the reference (Rust/Python) writer does. */
export function writeSafetensors(path: string, tensors: readonly TensorData[], metadata?: Record<string, string>): void {
  const names = new Set<string>();
  const entries = tensors.map((tensor) => {
    const bytes = tensorBytes(path, tensor, names);
    return { ...tensor, bytes, byteLength: bytes.length };
  });
  replaceAtomically(path, (temp) => writeShard(temp, entries, metadata, (fd, entry, position) => writeFully(fd, entry.bytes, position)));
}

/** Writes a checkpoint like transformers' save_pretrained; returns the paths written. */
export function writeShardedSafetensors(dir: string, tensors: readonly TensorData[], options?: ShardingOptions): string[] {
  const writer = new ShardedSafetensorsWriter(dir, options);
  try {
    for (const { name, dtype, shape, data } of tensors) writer.add(name, dtype, shape, data);
  } catch (err) {
    writer.abort();
    throw err;
  }
  return writer.finish();
}

interface ShardTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  byteLength: number;
}

/** A tensor waiting in its shard's data file until the shard's header can be written. */
interface BufferedTensor extends ShardTensor {
  dataOffset: number;
}

interface OpenShard {
  dataPath: string;
  fd: number;
  tensors: BufferedTensor[];
  byteLength: number;
}

/**
 * Streams tensors into a sharded checkpoint. The header precedes the data and must list every
 * offset, so each shard's tensors go to a data file first and are copied behind the header when
 * the shard fills up. Nothing appears under the final names until finish(); call abort() after
 * an error to remove every file written so far.
 */
export class ShardedSafetensorsWriter {
  readonly #dir: string;
  readonly #maxShardBytes: number;
  readonly #baseName: string;
  readonly #metadata: Record<string, string>;
  readonly #names = new Set<string>();
  readonly #shards: { path: string; tensorNames: string[] }[] = [];
  readonly #temps = new Set<string>();
  #placed: string[] = [];
  #open: OpenShard | undefined;
  #totalSize = 0;
  #done = false;

  constructor(
    dir: string,
    // 5 GB is the long-standing Hugging Face default shard size.
    { maxShardBytes = 5_000_000_000, baseName = "model", metadata = { format: "pt" } }: ShardingOptions = {},
  ) {
    mkdirSync(dir, { recursive: true });
    this.#dir = dir;
    this.#maxShardBytes = maxShardBytes;
    this.#baseName = baseName;
    this.#metadata = metadata;
  }

  add(name: string, dtype: SafetensorsDtype, shape: readonly number[], data: StorageArray): void {
    this.#assertWriting();
    const bytes = tensorBytes(this.#dir, { name, dtype, shape, data }, this.#names);
    if (this.#open && this.#open.byteLength + bytes.length > this.#maxShardBytes) this.#closeShard(this.#open);
    const shard = (this.#open ??= this.#openShard());
    writeFully(shard.fd, bytes, shard.byteLength);
    shard.tensors.push({ name, dtype, shape: [...shape], byteLength: bytes.length, dataOffset: shard.byteLength });
    shard.byteLength += bytes.length;
    this.#totalSize += bytes.length;
  }

  /** Writes the last shard and the index (when there are several shards), then moves all into place. */
  finish(): string[] {
    this.#assertWriting();
    try {
      // Even an empty checkpoint gets one (empty) file, so that it can be opened.
      if (this.#open || this.#shards.length === 0) this.#closeShard((this.#open ??= this.#openShard()));
      const count = this.#shards.length;
      const fileNames = this.#shards.map((_, i) =>
        count === 1 ? `${this.#baseName}.safetensors` : `${this.#baseName}-${shardNumber(i + 1)}-of-${shardNumber(count)}.safetensors`,
      );
      const moves = this.#shards.map((shard, i): [string, string] => [shard.path, join(this.#dir, fileNames[i]!)]);
      if (count > 1) moves.push(this.#writeIndex(fileNames));
      // The index moves last, so it never names a shard that is not in place yet.
      for (const [from, to] of moves) {
        renameSync(from, to);
        this.#temps.delete(from);
        this.#placed.push(to);
      }
      removeStaleOutputs(this.#dir, this.#baseName, new Set(moves.map(([, to]) => basename(to))));
      syncDirectory(this.#dir);
      const placed = this.#placed;
      this.#placed = [];
      this.#done = true;
      return placed;
    } catch (err) {
      this.abort();
      throw err;
    }
  }

  /** Removes every file this writer has created, including any already moved into place by a failed finish(). */
  abort(): void {
    if (this.#open) closeSync(this.#open.fd);
    this.#open = undefined;
    for (const path of [...this.#temps, ...this.#placed]) rmSync(path, { force: true });
    this.#temps.clear();
    this.#placed = [];
    this.#done = true;
  }

  #assertWriting(): void {
    if (this.#done) throw new Error(`${this.#dir}: safetensors writer already finished or aborted`);
  }

  #openShard(): OpenShard {
    const dataPath = tempName(join(this.#dir, `${this.#baseName}.data`));
    const fd = openSync(dataPath, "wx+");
    this.#temps.add(dataPath);
    return { dataPath, fd, tensors: [], byteLength: 0 };
  }

  #closeShard(shard: OpenShard): void {
    // The final name depends on the shard count, known only in finish().
    const path = tempName(join(this.#dir, `${this.#baseName}.shard${this.#shards.length + 1}.safetensors`));
    this.#temps.add(path);
    writeShard(path, shard.tensors, this.#metadata, (fd, tensor, position) =>
      copyRange(shard.fd, tensor.dataOffset, fd, position, tensor.byteLength, shard.dataPath),
    );
    this.#shards.push({ path, tensorNames: shard.tensors.map((tensor) => tensor.name) });
    closeSync(shard.fd);
    this.#open = undefined;
    rmSync(shard.dataPath);
    this.#temps.delete(shard.dataPath);
  }

  #writeIndex(fileNames: string[]): [string, string] {
    const weightMap = this.#shards
      .flatMap((shard, i) => shard.tensorNames.map((name): [string, string] => [name, fileNames[i]!]))
      .sort(([a], [b]) => compareNames(a, b));
    // Same text as save_pretrained's json.dumps(index, indent=2, sort_keys=True) + "\n".
    const index = { metadata: { total_size: this.#totalSize }, weight_map: Object.fromEntries(weightMap) };
    const path = join(this.#dir, `${this.#baseName}.safetensors.index.json`);
    const temp = tempName(path);
    this.#temps.add(temp);
    writeNewFile(temp, (fd) => writeFully(fd, Buffer.from(`${JSON.stringify(index, null, 2)}\n`), 0));
    return [temp, path];
  }
}

/** Checks a tensor about to be written and returns its bytes without copying them. */
function tensorBytes(file: string, { name, dtype, shape, data }: TensorData, names: Set<string>): Uint8Array {
  const invalid = (problem: string) => new FormatError(file, `tensor "${name}": ${problem}`);
  if (name === "__metadata__") throw invalid("the name is reserved for the file metadata");
  if (names.has(name)) throw invalid("the name is used twice");
  if (!isShape(shape)) throw invalid(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
  if (!isStorageFor(dtype, data)) throw invalid(`a ${data.constructor.name} cannot hold ${dtype} elements`);
  const byteLength = elementCount(shape) * dtypeSize(dtype);
  if (data.byteLength !== byteLength) {
    throw invalid(`data has ${data.byteLength} bytes but ${dtype} ${JSON.stringify(shape)} takes ${byteLength}`);
  }
  names.add(name);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Writes a whole safetensors file to the new file `path`: header, then each tensor's bytes as
 * placed by `writeData`, in the reference writer's order (descending alignment, then name).
 */
function writeShard<T extends ShardTensor>(
  path: string,
  tensors: readonly T[],
  metadata: Record<string, string> | undefined,
  writeData: (fd: number, tensor: T, position: number) => void,
): void {
  const ordered = [...tensors].sort(
    (a, b) => SAFETENSORS_DTYPES.indexOf(b.dtype) - SAFETENSORS_DTYPES.indexOf(a.dtype) || compareNames(a.name, b.name),
  );
  let offset = 0;
  // Built field by field because JSON.stringify would move integer-like tensor names to the front.
  const fields = ordered.map(({ name, dtype, shape, byteLength }) => {
    const entry = { dtype, shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
    return `${JSON.stringify(name)}:${JSON.stringify(entry)}`;
  });
  if (metadata) fields.unshift(`"__metadata__":${JSON.stringify(metadata)}`);
  const json = `{${fields.join(",")}}`;
  // Space padding to a multiple of 8 bytes keeps the data section 8-byte aligned.
  const header = Buffer.from(json + " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  writeNewFile(path, (fd) => {
    writeFully(fd, prefix, 0);
    writeFully(fd, header, 8);
    let position = 8 + header.length;
    for (const tensor of ordered) {
      writeData(fd, tensor, position);
      position += tensor.byteLength;
    }
  });
}

/** Creates `path`, which must not exist yet, fills it with `write` and fsyncs it; deletes it if anything fails. */
function writeNewFile(path: string, write: (fd: number) => void): void {
  const fd = openSync(path, "wx");
  try {
    write(fd);
    fsyncSync(fd);
  } catch (err) {
    rmSync(path, { force: true });
    throw err;
  } finally {
    closeSync(fd);
  }
}

/** Deletes files of an earlier save under the same base name, which loaders would pick up instead of or beside the new ones. */
function removeStaleOutputs(dir: string, baseName: string, keep: Set<string>): void {
  const escaped = baseName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const output = new RegExp(`^${escaped}(-\\d{5}-of-\\d{5})?\\.safetensors(\\.index\\.json)?$`);
  for (const name of readdirSync(dir)) {
    if (output.test(name) && !keep.has(name)) rmSync(join(dir, name), { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

const COPY_CHUNK_BYTES = 16 << 20;

function copyRange(from: number, fromPosition: number, to: number, toPosition: number, length: number, fromPath: string): void {
  const chunk = new Uint8Array(Math.min(COPY_CHUNK_BYTES, length));
  for (let done = 0; done < length; done += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, length - done));
    readFully(from, part, fromPosition + done, fromPath);
    writeFully(to, part, toPosition + done);
  }
}

// Single read/write calls may transfer less than asked (Linux caps them near 2 GiB).
function readFully(fd: number, target: Uint8Array, position: number, path: string): void {
  for (let done = 0; done < target.length; ) {
    const count = readSync(fd, target, done, target.length - done, position + done);
    if (count === 0) throw new FormatError(path, `unexpected end of file at byte ${position + done}`);
    done += count;
  }
}

function shardNumber(n: number): string {
  return String(n).padStart(5, "0");
}

/** By UTF-8 bytes, as Rust orders tensor names and Python sorts index keys. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isShape(value: unknown): value is number[] {
  return Array.isArray(value) && value.every(isCount);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, size) => count * size, 1);
}
