// Builds ggml's BLAS backend for the CPU (see src/engine/blas.ts). `npm install` runs it with
// --optional: a machine without a compiler or a BLAS library gets a note and ggml's own CPU kernels.
// Usage: npm run build-blas [-- --optional]
import fs from "node:fs";
import path from "node:path";
import { PINNED_VERSION, platformPackage } from "../src/engine/backend.ts";
import { BLAS_LIBRARY, blasBuildPrerequisites, buildBlasBackend } from "../src/engine/blas.ts";
import { findPrebuiltBinDir } from "../src/engine/native.ts";

const optional = process.argv.includes("--optional");
const NOTE = "training on the CPU uses ggml's own kernels (about 2x slower per step)";

function giveUp(message: string): never {
  console.error(`tasktune: BLAS backend not built: ${message}`);
  if (optional) console.error(`tasktune: ${NOTE}; build it later with \`npm run build-blas\``);
  process.exit(optional ? 0 : 1);
}

/** node-llama-cpp's bundle of the source its binaries were built from, where npm put the package. */
function findBundle(): string | undefined {
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    const bundle = path.join(dir, "node_modules/node-llama-cpp/llama/gitRelease.bundle");
    if (fs.existsSync(bundle)) return bundle;
    if (path.dirname(dir) === dir) return undefined;
  }
}

const missing = blasBuildPrerequisites();
if (missing.length) giveUp(`missing ${missing.join(", ")}`);
const binDir = await findPrebuiltBinDir(platformPackage("cpu"));
if (!binDir) giveUp(`the package ${platformPackage("cpu")} is not installed`);
const bundle = findBundle();
if (!bundle) giveUp("node-llama-cpp/llama/gitRelease.bundle not found under node_modules");
try {
  const { seconds, vendor } = buildBlasBackend({ bundle, binDir, ggmlPackage: PINNED_VERSION });
  console.error(`tasktune: built ${path.relative(process.cwd(), BLAS_LIBRARY)} in ${seconds.toFixed(1)} s (ggml BLAS backend on ${vendor})`);
} catch (err) {
  giveUp((err as Error).message);
}
