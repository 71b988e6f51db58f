// One CPU backend per kind per test process: ggml keeps process-wide state, and opening is not free.
import { Backend, PINNED_VERSION } from "../../src/engine/backend.ts";
import { blasLibrary } from "../../src/engine/blas.ts";

const shared = new Map<string, Promise<Backend>>();

/**
 * The CPU backend a user gets: with the BLAS backend when `npm install` built it. `blas: false`
 * gives ggml's CPU kernels alone; `blas: true` requires BLAS (see blasMissing to skip without it).
 */
export function testBackend(options: { blas?: boolean } = {}): Promise<Backend> {
  const key = String(options.blas);
  if (!shared.has(key)) shared.set(key, Backend.open({ device: "cpu", threads: 2, blas: options.blas }));
  return shared.get(key)!;
}

/** Why BLAS tests are skipped here, or false when the BLAS backend is built. */
export function blasMissing(): string | false {
  const library = blasLibrary(PINNED_VERSION);
  return "missing" in library ? `BLAS backend ${library.missing}` : false;
}
