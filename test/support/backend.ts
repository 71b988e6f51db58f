// One CPU backend per test process: ggml keeps process-wide state, and opening is not free.
import { Backend } from "../../src/engine/backend.ts";

let shared: Promise<Backend> | undefined;

export function testBackend(): Promise<Backend> {
  shared ??= Backend.open({ device: "cpu", threads: 2 });
  return shared;
}
