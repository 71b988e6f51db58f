// Proves that the koffi declarations in src/engine/native.ts (structs and enum constants) and the
// GGML_TYPE ids in src/engine/tensor.ts match the C headers of the llama.cpp release node-llama-cpp
// ships as a git bundle, and that the loaded library is that release: a version bump must fail
// here rather than silently read or write the wrong bytes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { TypeObject } from "koffi";
import * as native from "../src/engine/native.ts";
import { GGML_TYPE } from "../src/engine/tensor.ts";
import { testBackend } from "./support/backend.ts";

const { GGML_TENSOR_FLAG, koffi, structs } = native;

// The pinned release; update these deliberately together with the dependency versions. The bundle
// is one squashed commit, so the upstream commit the binaries report (ggml_commit) differs from it.
const PINNED = { bundleCommit: "80fb11a", ggmlVersion: "0.23.0", ggmlCommit: "5b4ebc5" };

const LLAMA_DIR = fileURLToPath(new URL("../node_modules/node-llama-cpp/llama/", import.meta.url));
const HEADERS = ["ggml.h", "ggml-alloc.h", "ggml-backend.h", "ggml-opt.h", "gguf.h"];
const hasCompiler = !spawnSync("cc", ["--version"]).error;

// Working dir holding the bundle's objects and, after checkout, its ggml/include headers.
let repo = "";
const git = (...args: string[]) => execFileSync("git", ["-C", repo, ...args], { encoding: "utf8" });

before(() => {
  repo = fs.mkdtempSync(path.join(os.tmpdir(), "tasktune-layout-"));
  git("init", "-q");
  git("fetch", "-q", path.join(LLAMA_DIR, "gitRelease.bundle"), "HEAD");
  git("checkout", "-q", "FETCH_HEAD", "--", "ggml/include", "ggml/CMakeLists.txt");
});
after(() => fs.rmSync(repo, { recursive: true, force: true }));

interface Check { what: string; expr: string; expected: number }

/** Offset and size of every member, recursing into nested structs (offsetof(S, adamw.alpha)). */
function memberChecks(struct: string, type: TypeObject, prefix = "", base = 0): Check[] {
  return Object.values(type.members ?? {}).flatMap((m) => {
    const field = prefix + m.name;
    const inner = koffi.type(m.type);
    return [
      { what: `${struct}.${field} offset`, expr: `offsetof(struct ${struct}, ${field})`, expected: base + m.offset },
      { what: `${struct}.${field} size`, expr: `sizeof(((struct ${struct} *)0)->${field})`, expected: inner.size },
      ...(inner.primitive === "Record" ? memberChecks(struct, inner, `${field}.`, base + m.offset) : []),
    ];
  });
}

/** Every export named GGML_... or GGUF_...: a number is the C constant of that name, an object maps KEY to NAME_KEY. */
function constantChecks(): Check[] {
  const exports: Record<string, unknown> = { ...native, GGML_TYPE };
  return Object.entries(exports).filter(([name]) => /^GG(ML|UF)_/.test(name)).flatMap(([name, value]) => {
    const entries = typeof value === "number" ? [[name, value] as const]
      : Object.entries(value as Record<string, number>).map(([key, v]) => [`${name}_${key.toUpperCase()}`, v] as const);
    return entries.map(([c, expected]) => ({ what: c, expr: c, expected }));
  });
}

test("structs and constants match the bundled llama.cpp headers", {
  skip: hasCompiler ? false : "no C compiler (cc) on PATH: cannot compile the bundled headers to check layouts",
}, () => {
  const checks = [
    ...Object.entries(structs).flatMap(([name, type]) => [
      { what: `${name} size`, expr: `sizeof(struct ${name})`, expected: koffi.sizeof(type) },
      { what: `${name} align`, expr: `_Alignof(struct ${name})`, expected: koffi.alignof(type) },
      ...memberChecks(name, koffi.type(type)),
    ]),
    ...constantChecks(),
  ];
  const source = [
    "#include <stddef.h>", "#include <stdio.h>", ...HEADERS.map((h) => `#include "${h}"`),
    "int main(void) {",
    ...checks.map((c) => `  printf("%lld\\n", (long long)(${c.expr}));`),
    "  return 0;", "}",
  ].join("\n");
  const program = path.join(repo, "layout");
  fs.writeFileSync(`${program}.c`, source);
  execFileSync("cc", ["-std=c11", "-I", path.join(repo, "ggml/include"), "-o", program, `${program}.c`],
    { stdio: ["ignore", "ignore", "pipe"] });
  const values = execFileSync(program, { encoding: "utf8" }).trim().split("\n").map(Number);
  // Compared as whole records so that a failure lists every mismatch at once.
  const fromHeaders = Object.fromEntries(checks.map((c, i) => [c.what, values[i]]));
  const declared = Object.fromEntries(checks.map((c) => [c.what, c.expected]));
  assert.deepEqual(declared, fromHeaders);
  assert.ok(checks.some((c) => c.what === "ggml_opt_optimizer_params.adamw.wd offset"), "nested members are checked");
});

test("a tensor decoded through structs.ggml_tensor agrees with ggml's own accessors", async () => {
  const { ggml } = await testBackend();
  const ctx = ggml.ggml_init({ mem_size: 4 * ggml.ggml_tensor_overhead(), mem_buffer: null, no_alloc: true });
  try {
    const t = ggml.ggml_new_tensor_4d(ctx, GGML_TYPE.f16, 5, 3, 2, 7);
    ggml.ggml_set_name(t, "layout_probe");
    ggml.ggml_set_param(t);
    ggml.ggml_set_input(t);
    const base = koffi.decode(t, structs.ggml_tensor);
    assert.equal(base.type, GGML_TYPE.f16);
    assert.deepEqual([...base.ne].map(Number), [5, 3, 2, 7]);
    const nb = [...base.nb].map(Number);
    assert.equal(nb[0], ggml.ggml_type_size(GGML_TYPE.f16));
    assert.equal(nb[1], ggml.ggml_row_size(GGML_TYPE.f16, 5));
    assert.equal(ggml.ggml_nbytes(t), nb[3] * 7);
    assert.equal(base.name, "layout_probe");
    assert.equal(base.flags, GGML_TENSOR_FLAG.PARAM | GGML_TENSOR_FLAG.INPUT);
    assert.equal(base.op, 0); // GGML_OP_NONE
    assert.equal(base.view_src, null);

    // A strided view with an offset exercises the pointer, view and op_params fields.
    const v = ggml.ggml_view_4d(ctx, t, 2, 3, 2, 7, nb[1], nb[2], nb[3], 4);
    const view = koffi.decode(v, structs.ggml_tensor);
    assert.equal(view.view_src, t);
    assert.equal(view.src[0], t);
    assert.equal(view.view_offs, 4);
    assert.equal(view.op_params[0], 4); // ggml_view_impl stores the offset as the op's first param
    assert.equal(view.name, "layout_probe (view)");
    assert.equal(ggml.ggml_op_desc(v), "VIEW");
    // ggml_nbytes of a non-contiguous tensor: type size + sum of (ne[i] - 1) * nb[i] over all dims.
    const ne = [...view.ne].map(Number);
    const strides = [...view.nb].map(Number);
    assert.equal(ggml.ggml_nbytes(v), ggml.ggml_type_size(GGML_TYPE.f16) +
      ne.reduce((sum: number, n: number, i: number) => sum + (n - 1) * strides[i], 0));
  } finally {
    ggml.ggml_free(ctx);
  }
});

test("the loaded ggml is the pinned release the bundled headers come from", async () => {
  const { ggml, binDir } = await testBackend();
  const cmake = fs.readFileSync(path.join(repo, "ggml/CMakeLists.txt"), "utf8");
  const part = (name: string) => cmake.match(new RegExp(`set\\(GGML_VERSION_${name} (\\d+)\\)`))?.[1];
  assert.equal(ggml.ggml_version(), `${part("MAJOR")}.${part("MINOR")}.${part("PATCH")}`, "binary vs headers");
  assert.equal(ggml.ggml_version(), PINNED.ggmlVersion);
  assert.equal(ggml.ggml_commit(), PINNED.ggmlCommit);
  assert.ok(git("rev-parse", "FETCH_HEAD").startsWith(PINNED.bundleCommit));
  // The prebuilt binaries record which llama.cpp release they were built from; it must be the bundle's.
  const { tag } = JSON.parse(fs.readFileSync(path.join(LLAMA_DIR, "llama.cpp.info.json"), "utf8")) as { tag: string };
  const built = JSON.parse(fs.readFileSync(path.join(binDir, "_nlcBuildMetadata.json"), "utf8")) as
    { buildOptions: { llamaCpp: { release: string } } };
  assert.equal(built.buildOptions.llamaCpp.release, tag);
});
