// Device selection over ggml's backend registry. The platform package decides which ggml build is
// loaded (CPU variants, CUDA, Vulkan); the registry then offers that build's devices.
import fs from "node:fs";
import os from "node:os";
import { blasLibrary } from "./blas.ts";
import { GGML_BACKEND_DEVICE_TYPE, GGML_MAX_N_THREADS, findPrebuiltBinDir, koffi, loadNative, type Ggml, type Ptr } from "./native.ts";

export type DeviceChoice = "cpu" | "cuda" | "vulkan" | "auto";
export const DEVICE_CHOICES: readonly DeviceChoice[] = ["cpu", "cuda", "vulkan", "auto"];

/** The npm package whose prebuilt ggml serves each device kind on this platform. */
export function platformPackage(kind: "cpu" | "cuda" | "vulkan"): string {
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
  /** The CPU backend's current thread count (shareCores); 0 before the first. */
  private cpuThreads = 0;
  /** ggml threadpool with fixed CPU placement (placeThreads), or 0 for ggml's per-compute threads. */
  private threadpool: Ptr = 0n;

  private constructor(
    readonly ggml: Ggml,
    readonly handle: Ptr,
    readonly device: DeviceInfo,
    readonly binDir: string,
    private threads: number,
    /** ggml's BLAS backend beside the CPU one: Graph hands it the matmuls it takes (engine/blas.ts). */
    readonly blas?: Ptr,
  ) {}

  /** The device's memory now (`device` holds it as it was at open). */
  memory(): { freeBytes: number; totalBytes: number } {
    const { freeBytes, totalBytes } = describeDevice(this.ggml, this.ggml.ggml_backend_get_device(this.handle));
    return { freeBytes, totalBytes };
  }

  /**
   * Opens a compute backend. `cpu` uses the best CPU variant ggml's registry picks for this
   * processor; `cuda`/`vulkan` need their @node-llama-cpp package installed; `auto` takes a GPU
   * package when one is installed and sees a GPU, else the CPU. TASKTUNE_GGML_DIR points at a
   * folder of self-built ggml libraries instead of the packages. On the CPU the BLAS backend joins
   * in when it is built, unless `blas: false` or TASKTUNE_BLAS=0; `blas: true` makes its absence an error.
   */
  static async open(options: { device?: DeviceChoice; threads?: number; blas?: boolean } = {}): Promise<Backend> {
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
      const info = describeDevice(ggml, dev);
      const handle = ggml.ggml_backend_dev_init(dev, null);
      if (!handle) throw new Error(`ggml could not initialise device ${info.name}`);
      const blasWanted = options.blas ?? process.env.TASKTUNE_BLAS !== "0";
      // A self-built ggml (TASKTUNE_GGML_DIR) may not match the module, which links the package's.
      const blas = info.kind === "cpu" && blasWanted ? openBlas(ggml, override ? { missing: "TASKTUNE_GGML_DIR is set" } : blasLibrary(PINNED_VERSION), threads) : undefined;
      if (options.blas === true && !blas) throw new Error(`the BLAS backend is not available: ${blasUnavailable}`);
      const backend = new Backend(ggml, handle, info, binDir, threads, blas);
      if (info.kind === "cpu") {
        // Backends opened before BLAS pinned the main thread move onto the placement too.
        if (placement && !placementApplied) {
          placementApplied = true;
          for (const other of cpuBackends) other.setThreads(other.threads);
        }
        cpuBackends.add(backend);
      }
      backend.setThreads(threads);
      return backend;
    }
    throw new Error("no usable ggml device");
  }

  get threadCount(): number {
    return this.threads;
  }

  /** Thread count of the CPU backend and BLAS (GPU backends ignore it). */
  setThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new Error(`threads must be a positive integer, got ${n}`);
    // ggml's and OpenMP's threads spin while they wait: more threads than CPUs made a training
    // step 40x slower (cpu-small LoRA, 3 threads on 2 CPUs: 6 s instead of 150 ms).
    const cpus = USABLE_CPUS;
    if (n > cpus && this.device.kind === "cpu") {
      if (!warnedOversubscribed) process.stderr.write(`tasktune: ${n} threads asked for, but this process may use ${cpus} CPUs; using ${cpus}\n`);
      warnedOversubscribed = true;
      n = cpus;
    }
    this.threads = n;
    this.cpuThreads = 0;
    if (this.device.kind !== "cpu") return;
    if (this.blas) this.setBackendThreads(this.blas, n);
    this.placeThreads();
    this.shareCores(false);
  }

  /**
   * ggml's CPU threads and BLAS's OpenMP threads both spin while they wait. Left to the kernel's
   * placement on a 2-core machine they took each other's cores: llama-tiny's training steps took
   * 7-400 ms instead of 3, cpu-small-full 96 or 130 ms depending on the run. Once BLAS has placed
   * OpenMP's threads (threadPlacement: the main thread, which is OpenMP's master, on one CPU and
   * the workers on the others), every CPU backend in the process gets a ggml threadpool placed
   * the same way: ggml's and OpenMP's workers share CPUs but never run at once, and neither runs
   * on the main thread's CPU. Steps were then steady at 91-97 ms.
   */
  private placeThreads(): void {
    this.freeThreadpool();
    if (!placement || this.threads === 1 || this.threads > placement.workers.length + 1) return;
    const cpus = new Set([...placement.workers.slice(0, this.threads - 1), placement.main]);
    const create = this.procAddress(this.handle, "ggml_threadpool_new");
    if (!create) return;
    this.threadpool = koffi.call(create, threadpoolNewProto, {
      cpumask: Array.from({ length: GGML_MAX_N_THREADS }, (_, cpu) => cpus.has(cpu)),
      // strict: one CPU per thread in mask order, the main thread on the last, which is placement.main.
      n_threads: this.threads, prio: 0, poll: 0, strict_cpu: true, paused: false,
    }) as Ptr;
    if (this.threadpool) this.setBackendThreadpool(this.threadpool);
  }

  /**
   * Gives ggml's CPU backend the threads a graph's compute should use: all of them on placed
   * threads (placeThreads). Otherwise one when the graph hands matmuls to BLAS (two unplaced pools
   * collide; one ggml thread beside BLAS's was steady at 112-116 ms), and one whenever the main
   * thread is pinned, because ggml's per-compute threads would inherit its single CPU.
   */
  shareCores(withBlas: boolean): void {
    const n = this.threadpool || (!placement && !(withBlas && this.blas)) ? this.threads : 1;
    if (this.device.kind !== "cpu" || n === this.cpuThreads) return;
    this.setBackendThreads(this.handle, n);
    this.cpuThreads = n;
  }

  /** A function the registry of `handle`'s backend exports by name (0 when it has none). */
  private procAddress(handle: Ptr, name: string): Ptr {
    const reg = this.ggml.ggml_backend_dev_backend_reg(this.ggml.ggml_backend_get_device(handle));
    return this.ggml.ggml_backend_reg_get_proc_address(reg, name);
  }

  private freeThreadpool(): void {
    if (!this.threadpool) return;
    this.setBackendThreadpool(0n);
    const free = this.procAddress(this.handle, "ggml_threadpool_free");
    if (free) koffi.call(free, threadpoolFreeProto, this.threadpool);
    this.threadpool = 0n;
  }

  private setBackendThreadpool(pool: Ptr): void {
    const set = this.procAddress(this.handle, "ggml_backend_cpu_set_threadpool");
    if (set) koffi.call(set, setThreadpoolProto, this.handle, pool);
  }

  private setBackendThreads(handle: Ptr, n: number): void {
    const fn = this.procAddress(handle, "ggml_backend_set_n_threads");
    if (fn) koffi.call(fn, setThreadsProto, handle, n);
  }

  /** The device's name, with "+BLAS" when the BLAS backend runs the large matmuls. */
  get label(): string {
    return this.blas ? `${this.device.name}+BLAS` : this.device.name;
  }

  get defaultBufferType(): Ptr {
    return this.ggml.ggml_backend_get_default_buffer_type(this.handle);
  }

  close(): void {
    if (this.freed) return;
    this.freed = true;
    cpuBackends.delete(this);
    this.freeThreadpool();
    if (this.blas) this.ggml.ggml_backend_free(this.blas);
    this.ggml.ggml_backend_free(this.handle);
  }
}

/** Why the last openBlas found no BLAS backend. */
let blasUnavailable = "turned off (TASKTUNE_BLAS=0 or blas: false)";

/** Why the CPU backend runs without BLAS (the last attempt's reason). */
export function blasUnavailableReason(): string {
  return blasUnavailable;
}

/** The module is registered with ggml once per process; later backends reuse its device. */
let blasDevice: Ptr | undefined;

/**
 * Where threads run when BLAS runs on BLIS's OpenMP build with several threads: the main thread
 * (OpenMP's master, ggml's thread 0) on the highest CPU this process may use, workers on the
 * others from the lowest up. ggml_threadpool_new puts the main thread on its mask's highest CPU,
 * so this holds for any thread count. Undefined off Linux, on one CPU, or when the user placed
 * OpenMP's threads already.
 */
function threadPlacement(threads: number): { main: number; workers: number[] } | undefined {
  if (threads < 2 || process.platform !== "linux") return undefined;
  if (["GOMP_CPU_AFFINITY", "OMP_PROC_BIND", "OMP_PLACES"].some((name) => process.env[name] !== undefined)) return undefined;
  const cpus = allowedCpus();
  return cpus.length >= 2 ? { main: cpus[cpus.length - 1], workers: cpus.slice(0, -1) } : undefined;
}

/** The CPUs in /proc/self/status's Cpus_allowed_list ("0-3,8,10-11"), in order. */
function allowedCpus(): number[] {
  const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? "";
  return list.split(",").filter(Boolean).flatMap((range) => {
    const [lo, hi = lo] = range.split("-").map(Number);
    return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  });
}

/** Where ggml's and OpenMP's threads run, once BLAS on BLIS has fixed it for this process. */
let placement: { main: number; workers: number[] } | undefined;
/** Open CPU backends, and whether those opened before the placement were moved onto it. */
const cpuBackends = new Set<Backend>();
let placementApplied = false;

function openBlas(ggml: Ggml, library: ReturnType<typeof blasLibrary>, threads: number): Ptr | undefined {
  if (!blasDevice) {
    if ("missing" in library) {
      blasUnavailable = library.missing;
      return undefined;
    }
    // After each call the BLAS library's idle threads spin by default (libgomp under BLIS for 300k
    // rounds, OpenBLAS for 2^28 cycles), on cores that ggml's threads need for the next ops: with
    // ggml on one thread beside BLAS, cpu-small-full ran at 3,800-4,500 tokens/s instead of a
    // steady 4,400. These are read when the library loads, so they are set just before; a user's
    // own values win.
    process.env.GOMP_SPINCOUNT ??= "1000";
    process.env.OPENBLAS_THREAD_TIMEOUT ??= "4";
    const cpus = library.vendor === "blis" ? threadPlacement(threads) : undefined;
    // OpenMP thread i goes on the i-th CPU listed: the master on the main thread's CPU.
    if (cpus) process.env.GOMP_CPU_AFFINITY = [cpus.main, ...cpus.workers].join(" ");
    const reg = ggml.ggml_backend_load(library.path);
    if (!reg) {
      blasUnavailable = `ggml could not load ${library.path} (run with TASKTUNE_VERBOSE=1 to see why; rebuild with \`npm run build-blas\`)`;
      return undefined;
    }
    blasDevice = ggml.ggml_backend_reg_dev_get(reg, 0);
    placement = cpus;
  }
  return ggml.ggml_backend_dev_init(blasDevice, null) || undefined;
}

export const PINNED_VERSION = "3.21.1";
const setThreadsProto = koffi.proto("void ggml_backend_set_n_threads_t(void *backend, int n_threads)");
const threadpoolNewProto = koffi.proto("void *ggml_threadpool_new_t(ggml_threadpool_params *params)");
const threadpoolFreeProto = koffi.proto("void ggml_threadpool_free_t(void *threadpool)");
const setThreadpoolProto = koffi.proto("void ggml_backend_cpu_set_threadpool_t(void *backend, void *threadpool)");

/** Physical cores are what ggml's matmuls scale with; hyperthreads only add contention. */
function defaultThreads(): number {
  const fromEnv = Number(process.env.TASKTUNE_THREADS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return USABLE_CPUS;
}

/**
 * The CPUs this process may run on (its affinity mask, not the machine's count), read before
 * BLAS's thread placement pins the main thread to one of them.
 */
const USABLE_CPUS = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);

let warnedOversubscribed = false;

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
