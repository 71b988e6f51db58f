// A job that makes ggml abort on purpose: mul_mat on mismatched shapes through the raw binding,
// skipping the TypeScript checks that normally stop it.
import { testBackend } from "./backend.ts";

const backend = await testBackend();
const { ggml } = backend;
const ctx = ggml.ggml_init({ mem_size: 1 << 20, mem_buffer: null, no_alloc: true });
const a = ggml.ggml_new_tensor_4d(ctx, 0, 3, 2, 1, 1);
const b = ggml.ggml_new_tensor_4d(ctx, 0, 4, 2, 1, 1);
ggml.ggml_mul_mat(ctx, a, b);
process.stdout.write("not reached\n");
