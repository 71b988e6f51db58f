// FFI declarations for ggml, written against the headers of the exact llama.cpp release that
// ships in node-llama-cpp/llama/gitRelease.bundle (ggml/include/{ggml,ggml-backend,ggml-alloc,
// ggml-opt,gguf}.h). Pinned versions are in package.json; test/native-layout.test.ts compiles the
// bundled headers and checks every struct declared here field by field.
import fs from "node:fs";
import path from "node:path";
import koffi, { type LibraryHandle, type TypeObject } from "koffi";

/** An untyped native pointer (koffi 3 returns pointers as BigInt). 0n is NULL. */
export type Ptr = bigint;

export const GGML_MAX_DIMS = 4;
export const GGML_MAX_SRC = 10;
export const GGML_MAX_NAME = 64;
export const GGML_MAX_OP_PARAMS = 64;
/** sizeof(struct ggml_object), the per-tensor bookkeeping ggml_tensor_overhead() adds. */
const GGML_OBJECT_SIZE = 32;

/** ggml.h GGML_MAX_N_THREADS: the length of ggml_threadpool_params.cpumask. */
export const GGML_MAX_N_THREADS = 512;

export const structs = {
  ggml_init_params: koffi.struct("ggml_init_params", {
    mem_size: "size_t",
    mem_buffer: "void *",
    no_alloc: "bool",
  }),
  ggml_tensor: koffi.struct("ggml_tensor", {
    type: "int",
    buffer: "void *",
    ne: koffi.array("int64_t", GGML_MAX_DIMS),
    nb: koffi.array("size_t", GGML_MAX_DIMS),
    op: "int",
    op_params: koffi.array("int32_t", GGML_MAX_OP_PARAMS / 4),
    flags: "int32_t",
    src: koffi.array("void *", GGML_MAX_SRC),
    view_src: "void *",
    view_offs: "size_t",
    data: "void *",
    name: koffi.array("char", GGML_MAX_NAME),
    extra: "void *",
    padding: koffi.array("char", 8),
  }),
  ggml_threadpool_params: koffi.struct("ggml_threadpool_params", {
    cpumask: koffi.array("bool", GGML_MAX_N_THREADS),
    n_threads: "int",
    prio: "int",
    poll: "uint32_t",
    strict_cpu: "bool",
    paused: "bool",
  }),
  gguf_init_params: koffi.struct("gguf_init_params", {
    no_alloc: "bool",
    ctx: "void *",
  }),
  ggml_opt_optimizer_params: koffi.struct("ggml_opt_optimizer_params", {
    adamw: koffi.struct({ alpha: "float", beta1: "float", beta2: "float", eps: "float", wd: "float" }),
    sgd: koffi.struct({ alpha: "float", wd: "float" }),
  }),
  ggml_opt_params: koffi.struct("ggml_opt_params", {
    backend_sched: "void *",
    ctx_compute: "void *",
    inputs: "void *",
    outputs: "void *",
    loss_type: "int",
    build_type: "int",
    opt_period: "int32_t",
    get_opt_pars: "void *",
    get_opt_pars_ud: "void *",
    optimizer: "int",
  }),
};

export const GGML_TENSOR_FLAG = { INPUT: 1, OUTPUT: 2, PARAM: 4, LOSS: 8 } as const;
export const GGML_STATUS_SUCCESS = 0;
export const GGML_BACKEND_DEVICE_TYPE = { CPU: 0, GPU: 1, IGPU: 2, ACCEL: 3, META: 4 } as const;
export const GGML_ROPE_TYPE_NEOX = 2;
export const GGUF_TYPE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7,
  STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

const logCallback = koffi.proto("void ggml_log_callback(int level, const char *text, void *user_data)");
const abortCallback = koffi.proto("void ggml_abort_callback_t(const char *error_message)");

type P = Ptr;
type F<A extends unknown[], R> = (...args: A) => R;

function declare(base: LibraryHandle, registry: LibraryHandle) {
  const f = <A extends unknown[], R>(proto: string, lib = base) => lib.func(proto) as unknown as F<A, R>;
  const unary = (name: string) => f<[P, P], P>(`void *${name}(void *ctx, void *a)`);
  const binary = (name: string) => f<[P, P, P], P>(`void *${name}(void *ctx, void *a, void *b)`);
  return {
    // ggml.h: contexts and tensors
    ggml_version: f<[], string>("const char *ggml_version()"),
    ggml_commit: f<[], string>("const char *ggml_commit()"),
    ggml_init: f<[{ mem_size: number; mem_buffer: P | null; no_alloc: boolean }], P>("void *ggml_init(ggml_init_params params)"),
    ggml_free: f<[P], void>("void ggml_free(void *ctx)"),
    ggml_tensor_overhead: f<[], number>("size_t ggml_tensor_overhead()"),
    ggml_graph_overhead_custom: f<[number, boolean], number>("size_t ggml_graph_overhead_custom(size_t size, bool grads)"),
    ggml_new_tensor_4d: f<[P, number, number, number, number, number], P>(
      "void *ggml_new_tensor_4d(void *ctx, int type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)"),
    ggml_set_name: f<[P, string], P>("void *ggml_set_name(void *tensor, const char *name)"),
    ggml_set_input: f<[P], void>("void ggml_set_input(void *tensor)"),
    ggml_set_output: f<[P], void>("void ggml_set_output(void *tensor)"),
    ggml_set_param: f<[P], void>("void ggml_set_param(void *tensor)"),
    ggml_set_loss: f<[P], void>("void ggml_set_loss(void *tensor)"),
    ggml_nbytes: f<[P], number>("size_t ggml_nbytes(void *tensor)"),
    ggml_type_size: f<[number], number>("size_t ggml_type_size(int type)"),
    ggml_blck_size: f<[number], number>("int64_t ggml_blck_size(int type)"),
    ggml_type_name: f<[number], string>("const char *ggml_type_name(int type)"),
    ggml_row_size: f<[number, number], number>("size_t ggml_row_size(int type, int64_t ne)"),
    ggml_op_desc: f<[P], string>("const char *ggml_op_desc(void *tensor)"),
    ggml_quantize_requires_imatrix: f<[number], boolean>("bool ggml_quantize_requires_imatrix(int type)"),
    ggml_quantize_chunk: f<[number, Float32Array, Uint8Array, number, number, number, Float32Array | null], number>(
      "size_t ggml_quantize_chunk(int type, const float *src, _Out_ void *dst, int64_t start, int64_t nrows, " +
      "int64_t n_per_row, const float *imatrix)"),
    // ggml.h: operations
    ggml_dup_tensor: f<[P, P], P>("void *ggml_dup_tensor(void *ctx, void *src)"),
    ggml_add: binary("ggml_add"),
    ggml_sub: binary("ggml_sub"),
    ggml_mul: binary("ggml_mul"),
    ggml_div: binary("ggml_div"),
    ggml_mul_mat: binary("ggml_mul_mat"),
    ggml_out_prod: binary("ggml_out_prod"),
    ggml_repeat: binary("ggml_repeat"),
    ggml_get_rows: binary("ggml_get_rows"),
    ggml_cpy: binary("ggml_cpy"),
    ggml_reshape: binary("ggml_reshape"),
    ggml_swiglu_split: binary("ggml_swiglu_split"),
    ggml_sqr: unary("ggml_sqr"),
    ggml_sqrt: unary("ggml_sqrt"),
    ggml_log: unary("ggml_log"),
    ggml_exp: unary("ggml_exp"),
    ggml_abs: unary("ggml_abs"),
    ggml_sgn: unary("ggml_sgn"),
    ggml_neg: unary("ggml_neg"),
    ggml_tanh: unary("ggml_tanh"),
    ggml_softplus: unary("ggml_softplus"),
    ggml_silu: unary("ggml_silu"),
    ggml_relu: unary("ggml_relu"),
    ggml_sum: unary("ggml_sum"),
    ggml_sum_rows: unary("ggml_sum_rows"),
    ggml_argmax: unary("ggml_argmax"),
    ggml_cont: unary("ggml_cont"),
    ggml_transpose: unary("ggml_transpose"),
    ggml_scale: f<[P, P, number], P>("void *ggml_scale(void *ctx, void *a, float s)"),
    ggml_scale_bias: f<[P, P, number, number], P>("void *ggml_scale_bias(void *ctx, void *a, float s, float b)"),
    ggml_scale_inplace: f<[P, P, number], P>("void *ggml_scale_inplace(void *ctx, void *a, float s)"),
    ggml_cast: f<[P, P, number], P>("void *ggml_cast(void *ctx, void *a, int type)"),
    ggml_rms_norm: f<[P, P, number], P>("void *ggml_rms_norm(void *ctx, void *a, float eps)"),
    ggml_diag_mask_inf: f<[P, P, number], P>("void *ggml_diag_mask_inf(void *ctx, void *a, int n_past)"),
    ggml_soft_max_ext: f<[P, P, P | null, number, number], P>(
      "void *ggml_soft_max_ext(void *ctx, void *a, void *mask, float scale, float max_bias)"),
    ggml_rope_ext: f<[P, P, P, P | null, number, number, number, number, number, number, number, number, number], P>(
      "void *ggml_rope_ext(void *ctx, void *a, void *b, void *c, int n_dims, int mode, int n_ctx_orig, " +
      "float freq_base, float freq_scale, float ext_factor, float attn_factor, float beta_fast, float beta_slow)"),
    ggml_reshape_4d: f<[P, P, number, number, number, number], P>(
      "void *ggml_reshape_4d(void *ctx, void *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)"),
    ggml_view_4d: f<[P, P, number, number, number, number, number, number, number, number], P>(
      "void *ggml_view_4d(void *ctx, void *a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, " +
      "size_t nb1, size_t nb2, size_t nb3, size_t offset)"),
    ggml_permute: f<[P, P, number, number, number, number], P>(
      "void *ggml_permute(void *ctx, void *a, int axis0, int axis1, int axis2, int axis3)"),
    ggml_opt_step_adamw: f<[P, P, P, P, P, P], P>(
      "void *ggml_opt_step_adamw(void *ctx, void *a, void *grad, void *m, void *v, void *adamw_params)"),
    // ggml.h: graphs
    ggml_new_graph_custom: f<[P, number, boolean], P>("void *ggml_new_graph_custom(void *ctx, size_t size, bool grads)"),
    ggml_build_forward_expand: f<[P, P], void>("void ggml_build_forward_expand(void *cgraph, void *tensor)"),
    ggml_build_backward_expand: f<[P, P, P | null], void>(
      "void ggml_build_backward_expand(void *ctx, void *cgraph, void *grad_accs)"),
    ggml_graph_n_nodes: f<[P], number>("int ggml_graph_n_nodes(void *cgraph)"),
    ggml_graph_node: f<[P, number], P>("void *ggml_graph_node(void *cgraph, int i)"),
    ggml_graph_add_node: f<[P, P], void>("void ggml_graph_add_node(void *cgraph, void *tensor)"),
    ggml_graph_clear: f<[P], void>("void ggml_graph_clear(void *cgraph)"),
    ggml_graph_get_grad: f<[P, P], P>("void *ggml_graph_get_grad(void *cgraph, void *node)"),
    ggml_graph_reset: f<[P], void>("void ggml_graph_reset(void *cgraph)"),
    ggml_log_set: f<[unknown, P | null], void>("void ggml_log_set(ggml_log_callback *cb, void *user_data)"),
    ggml_set_abort_callback: f<[unknown], unknown>(
      "ggml_abort_callback_t *ggml_set_abort_callback(ggml_abort_callback_t *cb)"),
    // ggml-backend.h / ggml-alloc.h
    ggml_backend_load_all_from_path: f<[string], void>("void ggml_backend_load_all_from_path(const char *dir)", registry),
    ggml_backend_load: f<[string], P>("void *ggml_backend_load(const char *path)", registry),
    ggml_backend_dev_count: f<[], number>("size_t ggml_backend_dev_count()", registry),
    ggml_backend_dev_get: f<[number], P>("void *ggml_backend_dev_get(size_t index)", registry),
    ggml_backend_dev_name: f<[P], string>("const char *ggml_backend_dev_name(void *dev)"),
    ggml_backend_dev_description: f<[P], string>("const char *ggml_backend_dev_description(void *dev)"),
    ggml_backend_dev_type: f<[P], number>("int ggml_backend_dev_type(void *dev)"),
    ggml_backend_dev_memory: f<[P, BigUint64Array, BigUint64Array], void>(
      "void ggml_backend_dev_memory(void *dev, _Out_ size_t *free, _Out_ size_t *total)"),
    ggml_backend_dev_backend_reg: f<[P], P>("void *ggml_backend_dev_backend_reg(void *dev)"),
    ggml_backend_reg_dev_get: f<[P, number], P>("void *ggml_backend_reg_dev_get(void *reg, size_t index)", registry),
    ggml_backend_get_device: f<[P], P>("void *ggml_backend_get_device(void *backend)"),
    ggml_backend_dev_init: f<[P, string | null], P>("void *ggml_backend_dev_init(void *dev, const char *params)"),
    ggml_backend_reg_get_proc_address: f<[P, string], P>("void *ggml_backend_reg_get_proc_address(void *reg, const char *name)"),
    ggml_backend_free: f<[P], void>("void ggml_backend_free(void *backend)"),
    ggml_backend_name: f<[P], string>("const char *ggml_backend_name(void *backend)"),
    ggml_backend_get_default_buffer_type: f<[P], P>("void *ggml_backend_get_default_buffer_type(void *backend)"),
    ggml_backend_supports_op: f<[P, P], boolean>("bool ggml_backend_supports_op(void *backend, void *op)"),
    ggml_backend_alloc_ctx_tensors: f<[P, P], P>("void *ggml_backend_alloc_ctx_tensors(void *ctx, void *backend)"),
    ggml_backend_buffer_free: f<[P], void>("void ggml_backend_buffer_free(void *buffer)"),
    ggml_backend_buffer_get_size: f<[P], number>("size_t ggml_backend_buffer_get_size(void *buffer)"),
    ggml_backend_buffer_clear: f<[P, number], void>("void ggml_backend_buffer_clear(void *buffer, uint8_t value)"),
    ggml_backend_tensor_set: f<[P, ArrayBufferView, number, number], void>(
      "void ggml_backend_tensor_set(void *tensor, const void *data, size_t offset, size_t size)"),
    ggml_backend_tensor_get: f<[P, ArrayBufferView, number, number], void>(
      "void ggml_backend_tensor_get(void *tensor, _Out_ void *data, size_t offset, size_t size)"),
    ggml_backend_tensor_memset: f<[P, number, number, number], void>(
      "void ggml_backend_tensor_memset(void *tensor, uint8_t value, size_t offset, size_t size)"),
    ggml_backend_graph_compute: f<[P, P], number>("int ggml_backend_graph_compute(void *backend, void *cgraph)"),
    ggml_gallocr_new: f<[P], P>("void *ggml_gallocr_new(void *buft)"),
    ggml_gallocr_free: f<[P], void>("void ggml_gallocr_free(void *galloc)"),
    ggml_gallocr_reserve: f<[P, P], boolean>("bool ggml_gallocr_reserve(void *galloc, void *graph)"),
    ggml_gallocr_alloc_graph: f<[P, P], boolean>("bool ggml_gallocr_alloc_graph(void *galloc, void *graph)"),
    ggml_gallocr_get_buffer_size: f<[P, number], number>("size_t ggml_gallocr_get_buffer_size(void *galloc, int buffer_id)"),
    // gguf.h
    gguf_init_from_file: f<[string, { no_alloc: boolean; ctx: P | BigUint64Array | null }], P>(
      "void *gguf_init_from_file(const char *fname, gguf_init_params params)"),
    gguf_free: f<[P], void>("void gguf_free(void *ctx)"),
    gguf_get_version: f<[P], number>("uint32_t gguf_get_version(void *ctx)"),
    gguf_get_alignment: f<[P], number>("size_t gguf_get_alignment(void *ctx)"),
    gguf_get_data_offset: f<[P], number>("size_t gguf_get_data_offset(void *ctx)"),
    gguf_get_n_kv: f<[P], number>("int64_t gguf_get_n_kv(void *ctx)"),
    gguf_find_key: f<[P, string], number>("int64_t gguf_find_key(void *ctx, const char *key)"),
    gguf_get_key: f<[P, number], string>("const char *gguf_get_key(void *ctx, int64_t key_id)"),
    gguf_get_kv_type: f<[P, number], number>("int gguf_get_kv_type(void *ctx, int64_t key_id)"),
    gguf_get_arr_type: f<[P, number], number>("int gguf_get_arr_type(void *ctx, int64_t key_id)"),
    gguf_get_val_u8: f<[P, number], number>("uint8_t gguf_get_val_u8(void *ctx, int64_t key_id)"),
    gguf_get_val_i8: f<[P, number], number>("int8_t gguf_get_val_i8(void *ctx, int64_t key_id)"),
    gguf_get_val_u16: f<[P, number], number>("uint16_t gguf_get_val_u16(void *ctx, int64_t key_id)"),
    gguf_get_val_i16: f<[P, number], number>("int16_t gguf_get_val_i16(void *ctx, int64_t key_id)"),
    gguf_get_val_u32: f<[P, number], number>("uint32_t gguf_get_val_u32(void *ctx, int64_t key_id)"),
    gguf_get_val_i32: f<[P, number], number>("int32_t gguf_get_val_i32(void *ctx, int64_t key_id)"),
    gguf_get_val_f32: f<[P, number], number>("float gguf_get_val_f32(void *ctx, int64_t key_id)"),
    gguf_get_val_u64: f<[P, number], number | bigint>("uint64_t gguf_get_val_u64(void *ctx, int64_t key_id)"),
    gguf_get_val_i64: f<[P, number], number | bigint>("int64_t gguf_get_val_i64(void *ctx, int64_t key_id)"),
    gguf_get_val_f64: f<[P, number], number>("double gguf_get_val_f64(void *ctx, int64_t key_id)"),
    gguf_get_val_bool: f<[P, number], boolean>("bool gguf_get_val_bool(void *ctx, int64_t key_id)"),
    gguf_get_val_str: f<[P, number], string>("const char *gguf_get_val_str(void *ctx, int64_t key_id)"),
    gguf_get_val_data: f<[P, number], P>("const void *gguf_get_val_data(void *ctx, int64_t key_id)"),
    gguf_get_arr_n: f<[P, number], number>("size_t gguf_get_arr_n(void *ctx, int64_t key_id)"),
    gguf_get_arr_data: f<[P, number], P>("void *gguf_get_arr_data(void *ctx, int64_t key_id)"),
    gguf_get_arr_str: f<[P, number, number], string>("const char *gguf_get_arr_str(void *ctx, int64_t key_id, size_t i)"),
    gguf_get_n_tensors: f<[P], number>("int64_t gguf_get_n_tensors(void *ctx)"),
    gguf_get_tensor_name: f<[P, number], string>("const char *gguf_get_tensor_name(void *ctx, int64_t tensor_id)"),
    gguf_get_tensor_offset: f<[P, number], number>("size_t gguf_get_tensor_offset(void *ctx, int64_t tensor_id)"),
    gguf_get_tensor_ne: f<[P, number], P>("void *gguf_get_tensor_ne(void *ctx, int64_t tensor_id)"),
    gguf_get_tensor_type: f<[P, number], number>("int gguf_get_tensor_type(void *ctx, int64_t tensor_id)"),
    gguf_get_tensor_size: f<[P, number], number>("size_t gguf_get_tensor_size(void *ctx, int64_t tensor_id)"),
    gguf_init_empty: f<[], P>("void *gguf_init_empty()"),
    gguf_set_val_u8: f<[P, string, number], void>("void gguf_set_val_u8(void *ctx, const char *key, uint8_t val)"),
    gguf_set_val_i8: f<[P, string, number], void>("void gguf_set_val_i8(void *ctx, const char *key, int8_t val)"),
    gguf_set_val_u16: f<[P, string, number], void>("void gguf_set_val_u16(void *ctx, const char *key, uint16_t val)"),
    gguf_set_val_i16: f<[P, string, number], void>("void gguf_set_val_i16(void *ctx, const char *key, int16_t val)"),
    gguf_set_val_u32: f<[P, string, number], void>("void gguf_set_val_u32(void *ctx, const char *key, uint32_t val)"),
    gguf_set_val_i32: f<[P, string, number], void>("void gguf_set_val_i32(void *ctx, const char *key, int32_t val)"),
    gguf_set_val_f32: f<[P, string, number], void>("void gguf_set_val_f32(void *ctx, const char *key, float val)"),
    gguf_set_val_u64: f<[P, string, bigint], void>("void gguf_set_val_u64(void *ctx, const char *key, uint64_t val)"),
    gguf_set_val_i64: f<[P, string, bigint], void>("void gguf_set_val_i64(void *ctx, const char *key, int64_t val)"),
    gguf_set_val_f64: f<[P, string, number], void>("void gguf_set_val_f64(void *ctx, const char *key, double val)"),
    gguf_set_val_bool: f<[P, string, boolean], void>("void gguf_set_val_bool(void *ctx, const char *key, bool val)"),
    gguf_set_val_str: f<[P, string, string], void>("void gguf_set_val_str(void *ctx, const char *key, const char *val)"),
    gguf_set_arr_data: f<[P, string, number, ArrayBufferView, number], void>(
      "void gguf_set_arr_data(void *ctx, const char *key, int type, const void *data, size_t n)"),
    gguf_set_arr_str: f<[P, string, string[], number], void>(
      "void gguf_set_arr_str(void *ctx, const char *key, const char **data, size_t n)"),
    gguf_add_tensor: f<[P, P], void>("void gguf_add_tensor(void *ctx, void *tensor)"),
    gguf_set_tensor_data: f<[P, string, ArrayBufferView], void>(
      "void gguf_set_tensor_data(void *ctx, const char *name, const void *data)"),
    gguf_write_to_file: f<[P, string, boolean], boolean>("bool gguf_write_to_file(void *ctx, const char *fname, bool only_meta)"),
  };
}

export type Ggml = ReturnType<typeof declare>;

export interface NativeLibrary {
  ggml: Ggml;
  /** Folder the ggml libraries were loaded from. */
  binDir: string;
}

/** Where the prebuilt ggml libraries of a @node-llama-cpp platform package live, or undefined. */
export async function findPrebuiltBinDir(packageName: string): Promise<string | undefined> {
  let binsDir: string;
  try {
    // The package hides package.json behind `exports`; its entry point reports its folder.
    const mod = (await import(packageName)) as { getBinsDir(): { binsDir: string } };
    binsDir = mod.getBinsDir().binsDir;
  } catch {
    return undefined;
  }
  const hit = fs.readdirSync(binsDir)
    .map((name) => path.join(binsDir, name))
    .find((dir) => fs.existsSync(path.join(dir, "libggml-base.so")));
  return hit;
}

let loaded: NativeLibrary | undefined;

/**
 * Loads ggml from `binDir` once per process. ggml keeps global state (backend registry, logger),
 * so a second, different folder in the same process is refused rather than silently mixed.
 */
export function loadNative(binDir: string): NativeLibrary {
  if (loaded) {
    if (path.resolve(loaded.binDir) !== path.resolve(binDir)) {
      throw new Error(`ggml is already loaded from ${loaded.binDir}; one process can use one ggml build (asked for ${binDir})`);
    }
    return loaded;
  }
  const registryLib = fs.readdirSync(binDir).find((name) => /^libggml(\.v[\d.]+)?\.so$/.test(name));
  if (!fs.existsSync(path.join(binDir, "libggml-base.so")) || !registryLib) {
    throw new Error(`${binDir}: no ggml libraries (libggml-base.so and libggml*.so) in this folder`);
  }
  // Loading the base first lets the registry library's NEEDED entry resolve to this exact copy.
  const base = koffi.load(path.join(binDir, "libggml-base.so"));
  const registry = koffi.load(path.join(binDir, registryLib));
  const ggml = declare(base, registry);
  checkTensorLayout(ggml);
  installLogger(ggml);
  ggml.ggml_backend_load_all_from_path(binDir);
  loaded = { ggml, binDir };
  return loaded;
}

/** Fails fast when the library's ggml_tensor is not the struct declared above. */
function checkTensorLayout(ggml: Ggml): void {
  const declared = koffi.sizeof(structs.ggml_tensor);
  const native = ggml.ggml_tensor_overhead() - GGML_OBJECT_SIZE;
  if (declared !== native) {
    throw new Error(`ggml_tensor is ${native} bytes in this ggml build but ${declared} in tasktune's declaration: ` +
      `the installed ggml (${ggml.ggml_version()}) does not match the pinned headers`);
  }
}

const GGML_LOG_LEVEL_ERROR = 4;
let logCallbackHandle: unknown;
let abortCallbackHandle: unknown;

/** The message of the last native abort, also written to stderr for a supervising process. */
export const ABORT_MARKER = "tasktune: ggml abort: ";

function installLogger(ggml: Ggml): void {
  const verbose = process.env.TASKTUNE_VERBOSE === "1";
  logCallbackHandle = koffi.register((level: number, text: string) => {
    if (verbose || level >= GGML_LOG_LEVEL_ERROR) process.stderr.write(text);
  }, koffi.pointer(logCallback));
  ggml.ggml_log_set(logCallbackHandle, null);
  // ggml aborts the process on a failed assert; the marker line lets a parent process
  // (see engine/worker.ts) report ggml's own message instead of a bare SIGABRT.
  abortCallbackHandle = koffi.register((message: string) => {
    fs.writeSync(2, `\n${ABORT_MARKER}${message.trim().replace(/\n/g, " | ")}\n`);
  }, koffi.pointer(abortCallback));
  ggml.ggml_set_abort_callback(abortCallbackHandle);
}

/** Reads one field of a native struct, e.g. readField(ptr, structs.ggml_tensor, "flags"). */
export function readField(ptr: Ptr, type: TypeObject, field: string): unknown {
  const member = koffi.type(type).members?.[field];
  if (!member) throw new Error(`no field ${field} in ${type.name}`);
  return koffi.decode(ptr, member.offset, member.type);
}

/**
 * Makes tensor `dst` compute what `from` computes: copies the op, its parameters and its operands,
 * and nothing else (shape, strides, flags, name and memory stay dst's). The shapes must match.
 */
export function copyOp(dst: Ptr, from: Ptr): void {
  const t = structs.ggml_tensor;
  for (const field of ["op", "op_params", "src"]) {
    const member = koffi.type(t).members![field];
    const bytes = koffi.decode(from, member.offset, koffi.array("uint8_t", koffi.sizeof(member.type), "Array")) as number[];
    koffi.encode(dst, member.offset, koffi.array("uint8_t", bytes.length, "Array"), bytes);
  }
}

export function writeInt32(ptr: Ptr, offset: number, value: number): void {
  koffi.encode(ptr, offset, "int32_t", value);
}

/**
 * Makes `node` a view of `target`'s memory at `offset` bytes: gallocr leaves it unallocated, and
 * its op writes its result straight into target.
 */
export function placeInto(node: Ptr, target: Ptr, offset = 0): void {
  koffi.encode(node, koffi.offsetof(structs.ggml_tensor, "view_src"), "void *", target);
  koffi.encode(node, koffi.offsetof(structs.ggml_tensor, "view_offs"), "size_t", offset);
}

/** Sets operand slot `index` of a node (an extra slot its op ignores orders it after `source`). */
export function setSource(node: Ptr, index: number, source: Ptr): void {
  koffi.encode(node, koffi.offsetof(structs.ggml_tensor, "src") + 8 * index, "void *", source);
}

/** Sets float parameter `index` of a node's op_params (e.g. the factor of a SCALE node). */
export function writeOpParamF32(node: Ptr, index: number, value: number): void {
  koffi.encode(node, koffi.offsetof(structs.ggml_tensor, "op_params") + 4 * index, "float", value);
}

export { koffi };
