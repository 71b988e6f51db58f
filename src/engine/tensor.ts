// Typed handles over ggml tensors: shape and dtype known in TypeScript so that mistakes are
// caught here with a clear message instead of a native abort.
import { GGML_TENSOR_FLAG, koffi, structs, type Ggml, type Ptr } from "./native.ts";

/**
 * ggml_type ids (ggml.h enum ggml_type) for the types tasktune reads, computes or stores. q8_1 and
 * q8_K are left out: they only carry matmul activations, and ggml cannot convert them to f32.
 */
export const GGML_TYPE = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, q2_k: 10, q3_k: 11, q4_k: 12,
  q5_k: 13, q6_k: 14, iq2_xxs: 16, iq2_xs: 17, iq3_xxs: 18, iq1_s: 19, iq4_nl: 20, iq3_s: 21,
  iq2_s: 22, iq4_xs: 23, i8: 24, i16: 25, i32: 26, i64: 27, f64: 28, iq1_m: 29, bf16: 30,
  tq1_0: 34, tq2_0: 35, mxfp4: 39, nvfp4: 40, q1_0: 41, q2_0: 42,
} as const;
export type DType = keyof typeof GGML_TYPE;

const DTYPE_BY_ID = new Map<number, DType>(Object.entries(GGML_TYPE).map(([k, v]) => [v, k as DType]));
const UNQUANTIZED = new Set<DType>(["f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64"]);

export function dtypeFromGgml(id: number, ggml: Ggml): DType {
  const dtype = DTYPE_BY_ID.get(id);
  if (!dtype) throw new Error(`ggml type ${ggml.ggml_type_name(id)} (${id}) is not supported by tasktune`);
  return dtype;
}

export function isQuantized(dtype: DType): boolean {
  return !UNQUANTIZED.has(dtype);
}

/** Four dims in ggml order: ne[0] is the fastest-varying (a row), the reverse of PyTorch's shape. */
export type Shape4 = [number, number, number, number];

export function toShape4(ne: readonly number[]): Shape4 {
  if (ne.length < 1 || ne.length > 4) throw new Error(`a tensor has 1 to 4 dims, got [${ne.join(", ")}]`);
  for (const n of ne) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`dims must be positive integers, got [${ne.join(", ")}]`);
  }
  return [ne[0], ne[1] ?? 1, ne[2] ?? 1, ne[3] ?? 1];
}

/** PyTorch order (slowest first) to ggml order, and back. */
export const fromTorchShape = (shape: readonly number[]): Shape4 => toShape4(shape.length ? [...shape].reverse() : [1]);
/** Trailing ggml dims of 1 are dropped, as ggml_n_dims counts them. */
export function toTorchShape(ne: readonly number[]): number[] {
  const dims = [...ne];
  while (dims.length > 1 && dims[dims.length - 1] === 1) dims.pop();
  return dims.reverse();
}

export type HostArray = Float32Array | Int32Array | Uint16Array | Uint8Array;

export class Tensor {
  constructor(
    readonly ggml: Ggml,
    readonly ptr: Ptr,
    readonly dtype: DType,
    readonly ne: Shape4,
  ) {}

  static wrap(ggml: Ggml, ptr: Ptr): Tensor {
    if (!ptr) throw new Error("ggml returned a NULL tensor (context out of memory?)");
    const raw = koffi.decode(ptr, structs.ggml_tensor) as { type: number; ne: ArrayLike<number | bigint> };
    const ne = Array.from(raw.ne, Number) as Shape4;
    return new Tensor(ggml, ptr, dtypeFromGgml(raw.type, ggml), ne);
  }

  get name(): string {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { name: string | ArrayLike<number> };
    return typeof raw.name === "string" ? raw.name : String.fromCharCode(...Array.from(raw.name)).replace(/\0.*$/s, "");
  }

  /** Strides in bytes, ggml order. */
  get nb(): Shape4 {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { nb: ArrayLike<number | bigint> };
    return Array.from(raw.nb, Number) as Shape4;
  }

  get flags(): number {
    return koffi.decode(this.ptr, koffi.offsetof(structs.ggml_tensor, "flags"), "int32_t") as number;
  }

  get isParam(): boolean {
    return (this.flags & GGML_TENSOR_FLAG.PARAM) !== 0;
  }

  /** The tensor whose memory this one views, if it is a view. */
  get viewSource(): Ptr | undefined {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { view_src: Ptr | null };
    return raw.view_src || undefined;
  }

  /** Byte offset of this view into its view source. */
  get viewOffset(): number {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { view_offs: number | bigint };
    return Number(raw.view_offs);
  }

  /** Every operand slot of the op that produced this tensor (undefined where empty). */
  get operandSlots(): (Ptr | undefined)[] {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { src: ArrayLike<Ptr | null> };
    return Array.from(raw.src, (p) => p || undefined);
  }

  /** The operands of the op that produced this tensor (empty slots left out). */
  get sourcePtrs(): Ptr[] {
    return this.operandSlots.filter((p): p is Ptr => p !== undefined);
  }

  hasSource(i: number): boolean {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { src: ArrayLike<Ptr | null> };
    return Boolean(raw.src[i]);
  }

  /** The i-th operand of the op that produced this tensor. */
  source(i: number): Tensor {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { src: ArrayLike<Ptr | null> };
    const ptr = raw.src[i];
    if (!ptr) throw new Error(`${this.describe()} has no operand ${i}`);
    return Tensor.wrap(this.ggml, ptr);
  }

  get elements(): number {
    return this.ne[0] * this.ne[1] * this.ne[2] * this.ne[3];
  }

  get nbytes(): number {
    return this.ggml.ggml_nbytes(this.ptr);
  }

  get isContiguous(): boolean {
    const nb = this.nb;
    let expected = this.ggml.ggml_type_size(GGML_TYPE[this.dtype]);
    if (nb[0] !== expected) return false;
    expected = this.ggml.ggml_row_size(GGML_TYPE[this.dtype], this.ne[0]);
    for (let i = 1; i < 4; i++) {
      if (this.ne[i] !== 1 && nb[i] !== expected) return false;
      expected *= this.ne[i];
    }
    return true;
  }

  /** Shape in PyTorch order, trailing ggml dims of 1 dropped. */
  get torchShape(): number[] {
    return toTorchShape(this.ne);
  }

  describe(): string {
    return `${this.name || "(unnamed)"} ${this.dtype}[${this.ne.join(", ")}]`;
  }

  setName(name: string): this {
    this.ggml.ggml_set_name(this.ptr, name.slice(0, 63));
    return this;
  }

  /** Copies host data into the tensor's backend buffer (the tensor must be allocated). */
  set(data: ArrayBufferView, byteOffset = 0): void {
    if (byteOffset + data.byteLength > this.nbytes) {
      throw new Error(`${this.describe()}: ${data.byteLength} bytes at offset ${byteOffset} do not fit its ${this.nbytes} bytes`);
    }
    this.checkAllocated();
    this.ggml.ggml_backend_tensor_set(this.ptr, data, byteOffset, data.byteLength);
  }

  /** Whole-tensor copy from host, checking that the element count and type match exactly. */
  setAll(data: HostArray): void {
    const expected = this.nbytes;
    if (data.byteLength !== expected) {
      throw new Error(`${this.describe()}: expected ${expected} bytes, got ${data.byteLength} (${data.constructor.name} of ${data.length})`);
    }
    this.set(data);
  }

  getF32(): Float32Array {
    if (this.dtype !== "f32") throw new Error(`${this.describe()}: getF32 needs an f32 tensor`);
    return this.read(new Float32Array(this.elements));
  }

  getI32(): Int32Array {
    if (this.dtype !== "i32") throw new Error(`${this.describe()}: getI32 needs an i32 tensor`);
    return this.read(new Int32Array(this.elements));
  }

  getBytes(): Uint8Array {
    return this.read(new Uint8Array(this.nbytes));
  }

  private read<T extends HostArray>(out: T): T {
    this.checkAllocated();
    if (!this.isContiguous) throw new Error(`${this.describe()}: cannot read a non-contiguous view`);
    this.ggml.ggml_backend_tensor_get(this.ptr, out, 0, out.byteLength);
    return out;
  }

  private checkAllocated(): void {
    const raw = koffi.decode(this.ptr, structs.ggml_tensor) as { buffer: Ptr | null; data: Ptr | null };
    if (!raw.buffer && !raw.data) throw new Error(`${this.describe()}: tensor has no memory yet (allocate its store or graph first)`);
  }
}
