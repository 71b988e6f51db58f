// ggml's BLAS backend, built on the user's machine from the exact ggml source that ships with
// node-llama-cpp, against the system's BLIS or OpenBLAS. The prebuilt packages have no BLAS
// backend, and ggml's own f32 matmul reaches about 70 GFLOP/s on 2 cores where BLIS reaches
// 160-195 (docs/ENGINE-NOTES.md), so training on the CPU hands its large matmuls to it when it is
// there. Building needs a C++ compiler, git and the library's headers; without them everything
// runs on ggml's CPU kernels. One C++ file is compiled (about two seconds) and linked against the
// installed libggml-base.so, so that the module resolves to the very copy of ggml the process has loaded.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Where `npm install` (or `npm run build-blas`) leaves the module and a note of what it was built for. */
const BLAS_DIR = path.join(PACKAGE_ROOT, "native");
export const BLAS_LIBRARY = path.join(BLAS_DIR, "libggml-blas.so");
const BLAS_STAMP = path.join(BLAS_DIR, "ggml-blas.json");

interface BlasStamp {
  /** The @node-llama-cpp version whose ggml source and libggml-base.so the module was built with. */
  ggmlPackage: string;
  vendor: BlasVendor["name"];
}

/** The built module for this ggml version and the library it uses, or why there is none. */
export function blasLibrary(ggmlPackage: string): { path: string; vendor: BlasVendor["name"] } | { missing: string } {
  if (!fs.existsSync(BLAS_LIBRARY)) return { missing: `not built (${BLAS_LIBRARY} is absent; see \`npm run build-blas\`)` };
  let stamp: BlasStamp;
  try {
    stamp = JSON.parse(fs.readFileSync(BLAS_STAMP, "utf8")) as BlasStamp;
  } catch {
    return { missing: `${BLAS_STAMP} is missing or unreadable; rebuild with \`npm run build-blas\`` };
  }
  if (stamp.ggmlPackage !== ggmlPackage) {
    return { missing: `built for ggml of ${stamp.ggmlPackage}, but ${ggmlPackage} is installed; rebuild with \`npm run build-blas\`` };
  }
  return { path: BLAS_LIBRARY, vendor: stamp.vendor };
}

export interface BlasSources {
  /** node-llama-cpp's git bundle of the llama.cpp source its binaries were built from. */
  bundle: string;
  /** The folder holding the prebuilt libggml-base.so to link against. */
  binDir: string;
  /** The @node-llama-cpp version, recorded in the stamp. */
  ggmlPackage: string;
}

function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** A BLAS library to build against: ggml-blas.cpp's define for it and the compiler flags. */
interface BlasVendor {
  name: "blis" | "openblas";
  define: string;
  cflags: string[];
  libs: string[];
}

/**
 * BLIS's OpenMP build first: on a 2-core AMD EPYC it ran the training step's sgemms at 160-195
 * GFLOP/s against OpenBLAS 0.3.21's 100-140, whose threads barely scale at these sizes, and its
 * OpenMP threads can be placed beside ggml's (Backend.placeThreads; BLIS's pthread build was
 * slower and cannot). Debian/Ubuntu ship both (libblis-openmp-dev, libopenblas-dev); the library's
 * folder is written into the module's runpath, so that the build it was compiled against is the
 * one it loads.
 */
function findBlasVendor(): BlasVendor | undefined {
  const include = `/usr/include/${os.arch() === "x64" ? "x86_64" : "aarch64"}-linux-gnu/blis-openmp`;
  const lib = include.replace("/usr/include/", "/usr/lib/");
  if (fs.existsSync(path.join(include, "blis.h")) && fs.existsSync(path.join(lib, "libblis.so"))) {
    return { name: "blis", define: "-DGGML_BLAS_USE_BLIS", cflags: [`-I${include}`], libs: [`-L${lib}`, "-lblis", `-Wl,-rpath,${lib}`] };
  }
  const pkgConfig = (flag: string) => {
    const out = spawnSync("pkg-config", [flag, "openblas"], { encoding: "utf8" });
    return out.status === 0 ? out.stdout.trim().split(/\s+/).filter(Boolean) : undefined;
  };
  const cflags = pkgConfig("--cflags");
  if (cflags) return { name: "openblas", define: "-DGGML_BLAS_USE_OPENBLAS", cflags, libs: pkgConfig("--libs") ?? ["-lopenblas"] };
  return undefined;
}

/** What building needs and this machine lacks (empty when it can build). */
export function blasBuildPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.platform !== "linux") missing.push(`Linux (this is ${process.platform})`);
  if (!which("c++")) missing.push("a C++ compiler (c++)");
  if (!which("git")) missing.push("git");
  if (!findBlasVendor()) missing.push("BLIS or OpenBLAS headers (Debian/Ubuntu: apt install libblis-openmp-dev, or libopenblas-dev)");
  return missing;
}

/**
 * Compiles ggml-blas.cpp from the bundled source into BLAS_LIBRARY (written to a temporary name
 * and renamed into place); returns the seconds it took and the library used. Throws with the
 * compiler's output.
 */
export function buildBlasBackend(sources: BlasSources): { seconds: number; vendor: string } {
  const started = performance.now();
  const missing = blasBuildPrerequisites();
  if (missing.length) throw new Error(`cannot build the BLAS backend: missing ${missing.join(", ")}`);
  const vendor = findBlasVendor()!;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-ggml-"));
  try {
    const src = path.join(work, "llama.cpp");
    // Only the headers and the BLAS backend's one source file are needed.
    execFileSync("git", ["clone", "--quiet", "--no-checkout", sources.bundle, src], { stdio: "pipe" });
    execFileSync("git", ["-C", src, "checkout", "--quiet", "HEAD", "--", "ggml/include", "ggml/src"], { stdio: "pipe" });
    fs.mkdirSync(BLAS_DIR, { recursive: true });
    const tmp = `${BLAS_LIBRARY}.${process.pid}.tmp`;
    const args = [
      "-O3", "-DNDEBUG", "-fPIC", "-shared", "-std=gnu++17",
      // The defines ggml's CMake uses for a dynamically loaded backend module.
      "-DGGML_BACKEND_BUILD", "-DGGML_BACKEND_DL", "-DGGML_BACKEND_SHARED", "-DGGML_SHARED", vendor.define,
      `-I${path.join(src, "ggml/include")}`, `-I${path.join(src, "ggml/src")}`, ...vendor.cflags,
      path.join(src, "ggml/src/ggml-blas/ggml-blas.cpp"),
      "-o", tmp, path.join(sources.binDir, "libggml-base.so"), ...vendor.libs,
    ];
    const run = spawnSync("c++", args, { encoding: "utf8" });
    if (run.status !== 0) {
      fs.rmSync(tmp, { force: true });
      throw new Error(`compiling ggml-blas.cpp failed:\nc++ ${args.join(" ")}\n${run.stderr}`);
    }
    fs.renameSync(tmp, BLAS_LIBRARY);
    const stamp: BlasStamp = { ggmlPackage: sources.ggmlPackage, vendor: vendor.name };
    fs.writeFileSync(`${BLAS_STAMP}.tmp`, JSON.stringify(stamp, null, 2) + "\n");
    fs.renameSync(`${BLAS_STAMP}.tmp`, BLAS_STAMP);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { seconds: (performance.now() - started) / 1000, vendor: vendor.name };
}
