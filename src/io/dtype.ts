// Tensor element types as safetensors names them, and bit-exact conversions between float32
// and the narrow float formats; GGUF code maps its own types onto these.

// Typed arrays use host byte order, and every tensor file format we handle is little-endian.
if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) throw new Error("tasktune needs a little-endian host");

// Key order is the Rust `Dtype` enum order (increasing alignment): the safetensors writer lays
// tensors out in descending order of it, which keeps every tensor aligned to its element size.
const STORAGE = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E5M2: Uint8Array,
  F8_E4M3: Uint8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
} as const;

export type SafetensorsDtype = keyof typeof STORAGE;
export type FloatDtype = "F64" | "F32" | "F16" | "BF16";
/** The typed array that holds a dtype's elements: F16/BF16 as raw bits, F8 and BOOL as bytes. */
export type StorageArray =
  | Uint8Array | Int8Array | Int16Array | Uint16Array | Int32Array
  | Uint32Array | Float32Array | Float64Array | BigInt64Array | BigUint64Array;
type StorageConstructor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): StorageArray;
  readonly BYTES_PER_ELEMENT: number;
};

export const SAFETENSORS_DTYPES = Object.keys(STORAGE) as readonly SafetensorsDtype[];

export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === "string" && Object.hasOwn(STORAGE, value);
}

export function dtypeSize(dtype: SafetensorsDtype): number {
  return STORAGE[dtype].BYTES_PER_ELEMENT;
}

export function isIntegerDtype(dtype: SafetensorsDtype): boolean {
  return /^[IU]\d+$/.test(dtype);
}

/** Whether `data` can be written as `dtype`: its storage array, or raw bytes. */
export function isStorageFor(dtype: SafetensorsDtype, data: StorageArray): boolean {
  return data instanceof Uint8Array || data instanceof STORAGE[dtype];
}

/** Little-endian `bytes` as the dtype's storage array; shares memory unless `bytes` is misaligned. */
export function viewAs(dtype: SafetensorsDtype, bytes: Uint8Array): StorageArray {
  const Storage: StorageConstructor = STORAGE[dtype];
  const aligned = bytes.byteOffset % Storage.BYTES_PER_ELEMENT === 0 ? bytes : bytes.slice();
  return new Storage(aligned.buffer, aligned.byteOffset, aligned.byteLength / Storage.BYTES_PER_ELEMENT);
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function f32Bits(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0]!;
}

/** `value >> shift`, rounded to nearest with ties to even. */
function roundShift(value: number, shift: number): number {
  const truncated = value >>> shift;
  const remainder = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return truncated + (remainder > half || (remainder === half && truncated & 1) ? 1 : 0);
}

/** IEEE binary16 bits nearest to `value` (as float32), ties to even; overflow gives infinity. */
export function f32ToF16(value: number): number {
  const bits = f32Bits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  // Setting the quiet bit keeps a NaN whose payload sits in the dropped low bits from becoming infinity.
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Below 2^-25 even the smallest subnormal (2^-24) is more than twice as far as zero.
    if (halfExponent < -10) return sign;
    return sign | roundShift(mantissa | 0x800000, 14 - halfExponent);
  }
  // Rounding may carry out of the mantissa into the exponent, up to infinity, which is the right result.
  return sign | roundShift((halfExponent << 23) | mantissa, 13);
}

export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (exponent === 0 ? mantissa * 2 ** -24 : (0x400 + mantissa) * 2 ** (exponent - 25));
}

/** bfloat16 bits nearest to `value` (as float32), ties to even; overflow gives infinity. */
export function f32ToBf16(value: number): number {
  const bits = f32Bits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return roundShift(bits, 16);
}

export function bf16ToF32(bits: number): number {
  scratchU32[0] = bits << 16;
  return scratchF32[0]!;
}

/** float8 e4m3fn (torch.float8_e4m3fn): bias 7, no infinities, S.1111.111 is NaN. */
function e4m3ToF32(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exponent = (bits >>> 3) & 0xf;
  const mantissa = bits & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  return sign * (exponent === 0 ? mantissa * 2 ** -9 : (0x8 + mantissa) * 2 ** (exponent - 10));
}

// Lookup tables beat per-element decoding when a merge converts billions of weights.
let f16Table: Float32Array | undefined;
let e5m2Table: Float32Array | undefined;
let e4m3Table: Float32Array | undefined;

function decodeTable(size: number, decode: (bits: number) => number): Float32Array {
  return Float32Array.from({ length: size }, (_, bits) => decode(bits));
}

function lookup(codes: StorageArray, table: Float32Array): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = table[codes[i] as number]!;
  return out;
}

/** Decodes little-endian `bytes` of `dtype` to float32; for F32 the result may share memory with `bytes`. */
export function toFloat32(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  const values = viewAs(dtype, bytes);
  switch (dtype) {
    case "F32":
      return values as Float32Array;
    case "F16":
      return lookup(values, (f16Table ??= decodeTable(0x10000, f16ToF32)));
    case "BF16":
      return new Float32Array(Uint32Array.from(values as Uint16Array, (bits) => bits << 16).buffer);
    case "F8_E5M2":
      // e5m2 is the high byte of a binary16.
      return lookup(values, (e5m2Table ??= decodeTable(0x100, (bits) => f16ToF32(bits << 8))));
    case "F8_E4M3":
      return lookup(values, (e4m3Table ??= decodeTable(0x100, e4m3ToF32)));
    default:
      return Float32Array.from(values as ArrayLike<number | bigint>, Number);
  }
}

/** Encodes float32 values as the storage array of a float dtype, rounding ties to even for F16/BF16. */
export function fromFloat32(dtype: FloatDtype, values: Float32Array): Float32Array | Float64Array | Uint16Array {
  switch (dtype) {
    case "F32":
      return values;
    case "F64":
      return Float64Array.from(values);
    case "F16":
      return Uint16Array.from(values, f32ToF16);
    case "BF16":
      return Uint16Array.from(values, f32ToBf16);
  }
}
