// Device selection over ggml's backend registry. The platform package decides which ggml build is
// loaded (CPU variants, CUDA, Vulkan); the registry then offers that build's devices.
import fs from "node:fs";
import os from "node:os";
import { GGML_BACKEND_DEVICE_TYPE, findPrebuiltBinDir, koffi, loadNative, type Ggml, type Ptr } from "./native.ts";

export type DeviceChoice = "cpu" | "cuda" | "vulkan" | "auto";
export const DEVICE_CHOICES: readonly DeviceChoice[] = ["cpu", "cuda", "vulkan", "auto"];

/** The npm package whose prebuilt ggml serves each device kind on this platform. */
function platformPackage(kind: "cpu" | "cuda" | "vulkan"): string {
  const platform = `${process.platform}-${process.arch}`;
  return kind === "cpu" ? `@node-llama-cpp/${platform}` : `@node-llama-cpp/${platform}-${kind}`;
}

export interface DeviceInfo {
  name: string;
  description: string;
  kind: "cpu" | "gpu" | "igpu" | "accel";
  freeBytes: number;
  totalBytes: number;
}

const KIND_BY_TYPE: Record<number, DeviceInfo["kind"]> = {
  [GGML_BACKEND_DEVICE_TYPE.CPU]: "cpu",
  [GGML_BACKEND_DEVICE_TYPE.GPU]: "gpu",
  [GGML_BACKEND_DEVICE_TYPE.IGPU]: "igpu",
  [GGML_BACKEND_DEVICE_TYPE.ACCEL]: "accel",
};

export class Backend {
  private freed = false;

  private constructor(
    readonly ggml: Ggml,
    readonly handle: Ptr,
    readonly device: DeviceInfo,
    readonly binDir: string,
    private threads: number,
  ) {}

  /**
   * Opens a compute backend. `cpu` uses the best CPU variant ggml's registry picks for this
   * processor; `cuda`/`vulkan` need their @node-llama-cpp package installed; `auto` takes a GPU
   * package when one is installed and sees a GPU, else the CPU. TASKTUNE_GGML_DIR points at a
   * folder of self-built ggml libraries instead of the packages.
   */
  static async open(options: { device?: DeviceChoice; threads?: number } = {}): Promise<Backend> {
    const choice = options.device ?? (process.env.TASKTUNE_DEVICE as DeviceChoice | undefined) ?? "cpu";
    if (!DEVICE_CHOICES.includes(choice)) {
      throw new Error(`unknown device "${choice}"; expected one of ${DEVICE_CHOICES.join(", ")}`);
    }
    const threads = options.threads ?? defaultThreads();
    const override = process.env.TASKTUNE_GGML_DIR;
    // One process can load one ggml build, so `auto` commits to CUDA only where an NVIDIA driver
    // is present; Vulkan (which also runs on CPUs through lavapipe) is used when asked for.
    const candidates: ("cpu" | "cuda" | "vulkan")[] = choice === "auto" ? (nvidiaDriverLoaded() ? ["cuda", "cpu"] : ["cpu"]) : [choice];
    for (const kind of candidates) {
      const binDir = override ?? (await findPrebuiltBinDir(platformPackage(kind)));
      if (!binDir) {
        if (choice !== "auto") {
          throw new Error(`--device ${kind} needs the package ${platformPackage(kind)}@${PINNED_VERSION}: ` +
            `install it with \`npm install -E ${platformPackage(kind)}@${PINNED_VERSION}\``);
        }
        continue;
      }
      const { ggml } = loadNative(binDir);
      const wanted = kind === "cpu" ? ["cpu"] : ["gpu", "igpu"];
      const dev = listDevicePointers(ggml).find((d) => wanted.includes(describeDevice(ggml, d).kind))
        ?? (choice === "auto" ? listDevicePointers(ggml).find((d) => describeDevice(ggml, d).kind === "cpu") : undefined);
      if (!dev) {
        throw new Error(`no ${kind} device found by ggml in ${binDir} (devices: ${listDevices(ggml).map((d) => d.name).join(", ") || "none"})`);
      }
      const handle = ggml.ggml_backend_dev_init(dev, null);
      if (!handle) throw new Error(`ggml could not initialise device ${describeDevice(ggml, dev).name}`);
      const backend = new Backend(ggml, handle, describeDevice(ggml, dev), binDir, threads);
      backend.setThreads(threads);
      return backend;
    }
    throw new Error("no usable ggml device");
  }

  get threadCount(): number {
    return this.threads;
  }

  /** Thread count of the CPU backend (GPU backends ignore it). */
  setThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new Error(`threads must be a positive integer, got ${n}`);
    this.threads = n;
    if (this.device.kind !== "cpu") return;
    const reg = this.ggml.ggml_backend_dev_backend_reg(listDevicePointers(this.ggml).find(
      (d) => describeDevice(this.ggml, d).name === this.device.name)!);
    const fn = this.ggml.ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    if (fn) koffi.call(fn, setThreadsProto, this.handle, n);
  }

  get defaultBufferType(): Ptr {
    return this.ggml.ggml_backend_get_default_buffer_type(this.handle);
  }

  close(): void {
    if (this.freed) return;
    this.freed = true;
    this.ggml.ggml_backend_free(this.handle);
  }
}

const PINNED_VERSION = "3.21.1";
const setThreadsProto = koffi.proto("void ggml_backend_set_n_threads_t(void *backend, int n_threads)");

/** Physical cores are what ggml's matmuls scale with; hyperthreads only add contention. */
function defaultThreads(): number {
  const fromEnv = Number(process.env.TASKTUNE_THREADS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
}

function nvidiaDriverLoaded(): boolean {
  return fs.existsSync("/proc/driver/nvidia/version");
}

function listDevicePointers(ggml: Ggml): Ptr[] {
  const n = ggml.ggml_backend_dev_count();
  return Array.from({ length: n }, (_, i) => ggml.ggml_backend_dev_get(i));
}

function describeDevice(ggml: Ggml, dev: Ptr): DeviceInfo {
  const free = new BigUint64Array(1);
  const total = new BigUint64Array(1);
  ggml.ggml_backend_dev_memory(dev, free, total);
  return {
    name: ggml.ggml_backend_dev_name(dev),
    description: ggml.ggml_backend_dev_description(dev),
    kind: KIND_BY_TYPE[ggml.ggml_backend_dev_type(dev)] ?? "accel",
    freeBytes: Number(free[0]),
    totalBytes: Number(total[0]),
  };
}

export function listDevices(ggml: Ggml): DeviceInfo[] {
  return listDevicePointers(ggml).map((d) => describeDevice(ggml, d));
}
