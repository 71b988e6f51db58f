// Persistent tensors (weights, trainable parameters, optimizer moments) in one backend buffer.
// Graphs reference them; gallocr never reuses their memory.
import type { Backend } from "./backend.ts";
import { GGML_TYPE, Tensor, toShape4, type DType } from "./tensor.ts";
import type { Ptr } from "./native.ts";

export class TensorStore {
  private readonly ctx: Ptr;
  private buffer: Ptr = 0n;
  private readonly byName = new Map<string, Tensor>();

  constructor(readonly backend: Backend, readonly label: string, maxTensors = 4096) {
    const { ggml } = backend;
    this.ctx = ggml.ggml_init({ mem_size: maxTensors * ggml.ggml_tensor_overhead(), mem_buffer: null, no_alloc: true });
    if (!this.ctx) throw new Error(`${label}: ggml_init failed`);
  }

  get allocated(): boolean {
    return this.buffer !== 0n;
  }

  /** Creates a tensor; `ne` is in ggml order (fastest dim first). Names are unique per store. */
  tensor(dtype: DType, ne: readonly number[], name: string): Tensor {
    if (this.allocated) throw new Error(`${this.label}: cannot add ${name} after the store was allocated`);
    if (this.byName.has(name)) throw new Error(`${this.label}: duplicate tensor name ${name}`);
    const [n0, n1, n2, n3] = toShape4(ne);
    const { ggml } = this.backend;
    const blck = ggml.ggml_blck_size(GGML_TYPE[dtype]);
    if (n0 % blck !== 0) {
      throw new Error(`${this.label}: ${name}: rows of ${n0} elements cannot be stored as ${dtype} (blocks of ${blck})`);
    }
    const t = Tensor.wrap(ggml, ggml.ggml_new_tensor_4d(this.ctx, GGML_TYPE[dtype], n0, n1, n2, n3)).setName(name);
    this.byName.set(name, t);
    return t;
  }

  get(name: string): Tensor | undefined {
    return this.byName.get(name);
  }

  get tensors(): Tensor[] {
    return [...this.byName.values()];
  }

  /** Allocates every tensor of the store in one buffer of the backend, zero-filled. */
  allocate(): void {
    if (this.allocated) return;
    if (this.byName.size === 0) throw new Error(`${this.label}: nothing to allocate`);
    const { ggml } = this.backend;
    this.buffer = ggml.ggml_backend_alloc_ctx_tensors(this.ctx, this.backend.handle);
    if (!this.buffer) throw new Error(`${this.label}: could not allocate ${this.byName.size} tensors on ${this.backend.device.name}`);
    this.clear();
  }

  /** Zero-fills every tensor of the store. */
  clear(): void {
    if (!this.allocated) throw new Error(`${this.label}: not allocated`);
    this.backend.ggml.ggml_backend_buffer_clear(this.buffer, 0);
  }

  get bytes(): number {
    return this.allocated ? this.backend.ggml.ggml_backend_buffer_get_size(this.buffer) : 0;
  }

  free(): void {
    const { ggml } = this.backend;
    if (this.buffer) ggml.ggml_backend_buffer_free(this.buffer);
    this.buffer = 0n;
    ggml.ggml_free(this.ctx);
  }
}
