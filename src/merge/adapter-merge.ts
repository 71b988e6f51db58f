// Merging PEFT LoRA adapters into one new adapter with the semantics of PEFT's
// LoraModel.add_weighted_adapter (peft/tuners/lora/model.py, peft 0.21): the same
// combination_type names, rank rules, per-side weights and merge_utils functions, so the merged
// adapter gives the logits PEFT's does. Tensor math runs in ggml graphs; the magnitude threshold
// and random drop masks are host-side (see ops.ts), and SVD is JS (see svd.ts).
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, patternValue, readLoraConfig, type LoraConfig } from "../adapters/peft-config.ts";
import type { Backend } from "../engine/backend.ts";
import { Graph } from "../engine/graph.ts";
import { TensorStore } from "../engine/store.ts";
import type { Shape4, Tensor } from "../engine/tensor.ts";
import { FormatError } from "../io/errors.ts";
import { openCheckpoint, writeSafetensors, type TensorData } from "../io/safetensors.ts";
import type { AdapterMergeConfig, CombinationType } from "./config.ts";
import {
  bernoulliMask, hashSeed, keepAtLeast, magnitudeCut, oneIfZero, signAgreement, sumAll,
} from "./ops.ts";
import { OutputDir } from "./output.ts";
import { truncatedSvd } from "./svd.ts";
import { withThreadsFor } from "./tensor-merge.ts";

export interface AdapterMergeOptions {
  backend: Backend;
  /** Seed of the random drops of dare_* (default 0). */
  seed?: number;
  overwrite?: boolean;
  warn?(message: string): void;
}

export interface AdapterMergeResult {
  outDir: string;
  files: string[];
  combinationType: CombinationType;
  rank: number;
  modules: number;
  /** Largest relative residual of the truncated SVDs (svd variants). */
  svdResidual?: number;
}

interface ModuleLora {
  /** PyTorch layouts: A [r, in], B [out, r]. */
  a: Float32Array;
  b: Float32Array;
  r: number;
  inFeatures: number;
  outFeatures: number;
  /** PEFT's target.scaling[adapter]: alpha / r, or alpha / sqrt(r) with rsLoRA. */
  scaling: number;
}

interface LoadedAdapter {
  dir: string;
  weight: number;
  config: LoraConfig;
  rawConfig: Record<string, unknown>;
  modules: Map<string, ModuleLora>;
}

const PREFIX = "base_model.model.";

export function mergeAdapters(config: AdapterMergeConfig, outDir: string, options: AdapterMergeOptions): AdapterMergeResult {
  const warn = options.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const adapters = config.adapters.map((a) => loadLora(a.adapter, a.weight));
  // PEFT: a single adapter can only be merged linearly.
  const combination: CombinationType = adapters.length === 1 ? "linear" : config.combinationType;
  const rank = newRank(adapters, combination, config.svdRank);
  const targetModules = unionTargets(adapters);
  const modules = [...new Set(adapters.flatMap((a) => [...a.modules.keys()]))];
  checkBase(config.baseModel, adapters, modules);
  const density = config.density ?? 1;
  if (density === 0 && combination.startsWith("dare")) throw new Error("parameters.density: dare_* needs a density above 0 (it rescales by 1 / density)");
  if (density >= 1 && !["linear", "cat", "svd"].includes(combination)) warn(`density ${density} >= 1: no pruning is performed`);

  const output = new OutputDir(outDir, options.overwrite);
  try {
    const tensors: TensorData[] = [];
    let svdResidual: number | undefined;
    for (const module of modules) {
      const present = adapters.filter((a) => a.modules.has(module));
      const first = present[0]!.modules.get(module)!;
      let a: Float32Array, b: Float32Array;
      const seed = (side: string) => (i: number) => hashSeed(options.seed ?? 0, module, side, i);
      if (combination === "cat") {
        ({ a, b } = concatenate(options.backend, present.map((p) => ({ lora: p.modules.get(module)!, weight: p.weight })), rank));
      } else if (combination === "linear" || combination === "ties" || combination === "dare_linear" || combination === "dare_ties" || combination === "magnitude_prune") {
        // PEFT splits weight * scaling over both sides as a square root, the sign on A only.
        const ws = present.map((p) => p.weight * p.modules.get(module)!.scaling);
        const wA = ws.map((w) => Math.sqrt(Math.abs(w)) * (w >= 0 ? 1 : -1));
        const wB = ws.map((w) => Math.sqrt(Math.abs(w)));
        const loras = present.map((p) => p.modules.get(module)!);
        if (loras.some((l) => l.r !== first.r)) throw new Error(`${module}: ${combination} needs every adapter's lora_A/lora_B at the same rank (got ${loras.map((l) => l.r).join(", ")})`);
        const combo = { kind: combination, density, majority: config.majoritySignMethod };
        a = combineTensors(options.backend, loras.map((l) => l.a), [first.inFeatures, first.r, 1, 1], wA, { ...combo, seed: seed("A") });
        b = combineTensors(options.backend, loras.map((l) => l.b), [first.r, first.outFeatures, 1, 1], wB, { ...combo, seed: seed("B") });
        // A module below the adapters' r (rank_pattern) is zero-padded to it: the merged config has no pattern.
        if (first.r < rank) ({ a, b } = padRank(a, b, first.r, rank, first.inFeatures, first.outFeatures));
      } else {
        const kind = combination === "svd" ? "linear" : combination.slice(0, -"_svd".length) as PeftCombination;
        const loras = present.map((p) => p.modules.get(module)!);
        const deltas = loraDeltas(options.backend, loras);
        const delta = combineTensors(options.backend, deltas, [first.inFeatures, first.outFeatures, 1, 1], present.map((p) => p.weight),
          { kind, density, majority: config.majoritySignMethod, seed: seed("delta") });
        const m = first.outFeatures, n = first.inFeatures;
        if (rank > Math.min(m, n)) throw new Error(`${module}: svd rank ${rank} exceeds min(out, in) = ${Math.min(m, n)}`);
        const svd = truncatedSvd(delta, m, n, rank, { seed: hashSeed(options.seed ?? 0, module, "svd") });
        if (!svd.converged) warn(`${module}: truncated SVD stopped after ${svd.iterations} iterations at relative residual ${svd.residual.toExponential(2)}`);
        svdResidual = Math.max(svdResidual ?? 0, svd.residual);
        b = new Float32Array(m * rank);
        for (let i = 0; i < m; i++) for (let j = 0; j < rank; j++) b[i * rank + j] = svd.u[i * rank + j]! * svd.s[j]!;
        a = Float32Array.from(svd.vt);
        if (config.svdClamp !== undefined) clampByQuantile([b, a], config.svdClamp);
      }
      tensors.push(
        { name: `${PREFIX}${module}.lora_A.weight`, dtype: "F32", shape: [rank, first.inFeatures], data: a },
        { name: `${PREFIX}${module}.lora_B.weight`, dtype: "F32", shape: [first.outFeatures, rank], data: b },
      );
    }
    writeSafetensors(path.join(output.temp, ADAPTER_WEIGHTS), tensors, { format: "pt" });
    const merged = {
      ...adapters[0]!.rawConfig,
      r: rank,
      lora_alpha: rank,
      target_modules: targetModules,
      alpha_pattern: {},
      rank_pattern: {},
      // PEFT keeps use_rslora from the first adapter, which would scale the merged update by
      // sqrt(r) instead of 1; the tensors above are computed for scaling 1 (alpha = r).
      use_rslora: false,
    };
    output.writeFile(ADAPTER_CONFIG, `${JSON.stringify(merged, null, 2)}\n`);
    output.writeFile("merge_config.yml", YAML.stringify(config.raw));
    const files = output.commit();
    return { outDir: output.target, files, combinationType: combination, rank, modules: modules.length, svdResidual };
  } catch (err) {
    output.discard();
    throw err;
  }
}

function loadLora(dir: string, weight: number): LoadedAdapter {
  const config = readLoraConfig(dir);
  const configFile = path.join(dir, ADAPTER_CONFIG);
  const rawConfig = JSON.parse(fs.readFileSync(configFile, "utf8")) as Record<string, unknown>;
  if (config.useDora) throw new FormatError(configFile, "use_dora: add_weighted_adapter merges plain LoRA only (DoRA magnitudes cannot be combined)");
  const checkpoint = openCheckpoint(dir, ADAPTER_WEIGHTS);
  try {
    const keys = [...checkpoint.tensors.keys()];
    const other = keys.filter((k) => !/\.lora_[AB]\.weight$/.test(k));
    if (other.length) {
      throw new FormatError(path.join(dir, ADAPTER_WEIGHTS), `holds tensors other than lora_A/lora_B (modules_to_save, bias or embedding LoRA), which cannot be merged: ${other.slice(0, 4).join(", ")}`);
    }
    const modules = new Map<string, ModuleLora>();
    for (const key of keys.filter((k) => k.endsWith(".lora_A.weight"))) {
      const module = key.slice(0, -".lora_A.weight".length).replace(/^base_model\.model\./, "");
      const bKey = key.replace(/lora_A\.weight$/, "lora_B.weight");
      if (!checkpoint.tensors.has(bKey)) throw new FormatError(path.join(dir, ADAPTER_WEIGHTS), `${key} has no ${bKey}`);
      const [r, inFeatures] = checkpoint.info(key).shape as [number, number];
      const [outFeatures, rB] = checkpoint.info(bKey).shape as [number, number];
      if (rB !== r) throw new FormatError(path.join(dir, ADAPTER_WEIGHTS), `${module}: lora_A has rank ${r} but lora_B ${rB}`);
      const rank = patternValue(config.rankPattern, module, config.r);
      const alpha = patternValue(config.alphaPattern, module, config.loraAlpha);
      modules.set(module, {
        a: checkpoint.readF32(key), b: checkpoint.readF32(bKey), r, inFeatures, outFeatures,
        scaling: config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank,
      });
    }
    if (modules.size === 0) throw new FormatError(path.join(dir, ADAPTER_WEIGHTS), "holds no LoRA tensors");
    return { dir, weight, config, rawConfig, modules };
  } finally {
    checkpoint.close();
  }
}

/** PEFT's _check_add_weighted_adapter rank rules. */
function newRank(adapters: LoadedAdapter[], combination: CombinationType, svdRank: number | undefined): number {
  const ranks = adapters.map((a) => Math.max(a.config.r, ...Object.values(a.config.rankPattern)));
  if (combination === "cat") return ranks.reduce((x, y) => x + y, 0);
  if (combination.endsWith("svd")) return svdRank ?? Math.max(...ranks);
  if (new Set(ranks).size !== 1) {
    throw new Error(`adapters: ${combination} needs every adapter at the same r (got ${ranks.join(", ")}); use cat or an svd variant`);
  }
  return ranks[0]!;
}

function unionTargets(adapters: LoadedAdapter[]): string[] | string {
  const targets = adapters.map((a) => a.config.targetModules);
  if (targets.every((t) => typeof t === "string")) return targets.map((t) => `(${t})`).join("|");
  if (targets.every((t) => Array.isArray(t))) return [...new Set(targets.flat() as string[])].sort();
  throw new Error("adapters: target_modules mixes regex strings and lists, which add_weighted_adapter does not combine");
}

/** Every adapted module must be a weight of the base model with the adapter's in/out features. */
function checkBase(baseModel: string, adapters: LoadedAdapter[], modules: string[]): void {
  const base = openCheckpoint(baseModel);
  try {
    for (const module of modules) {
      const weight = `${module}.weight`;
      const info = base.tensors.get(weight);
      for (const adapter of adapters) {
        const lora = adapter.modules.get(module);
        if (!lora) continue;
        if (!info) throw new Error(`tensor "${weight}": adapter ${adapter.dir} adapts it but base_model ${baseModel} has no such tensor (adapter made for another model?)`);
        if (info.shape.length !== 2 || info.shape[0] !== lora.outFeatures || info.shape[1] !== lora.inFeatures) {
          throw new Error(`tensor "${weight}": base_model has [${info.shape.join(", ")}] but adapter ${adapter.dir} has B @ A [${lora.outFeatures}, ${lora.inFeatures}] (adapter made for another model?)`);
        }
      }
    }
  } finally {
    base.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Graph helpers

/** Builds a graph over host tensors, computes it and reads back the outputs (one thread for small graphs). */
function compute(backend: Backend, elements: number, build: (g: Graph, input: (data: Float32Array, ne: Shape4) => Tensor) => Tensor[]): Float32Array[] {
  return withThreadsFor(backend, elements, () => {
    const g = new Graph(backend);
    try {
      const fills: [Tensor, Float32Array][] = [];
      const leaves = new Set<bigint>();
      const outs = build(g, (data, ne) => {
        const t = g.input("f32", ne, `in ${fills.length}`);
        fills.push([t, data]);
        leaves.add(t.ptr);
        return t;
      }).map((t) => (leaves.has(t.ptr) ? g.cont(t) : t));
      for (const t of outs) g.output(t);
      g.allocate();
      for (const [t, data] of fills) t.setAll(data);
      g.compute();
      return outs.map((t) => t.getF32());
    } finally {
      g.free();
    }
  });
}

type PeftCombination = "linear" | "ties" | "dare_linear" | "dare_ties" | "magnitude_prune";

/**
 * peft.utils.merge_utils over host tensors of one shape: task_arithmetic, ties, dare_linear,
 * dare_ties, magnitude_prune. Pruning applies to the unweighted tensors, the majority sign is
 * elected on the pruned unweighted tensors, and the disjoint mean divides by the count of
 * agreeing tensors (at least 1).
 */
function combineTensors(
  backend: Backend, tensors: Float32Array[], ne: Shape4, weights: number[],
  o: { kind: PeftCombination; density: number; majority: "total" | "frequency"; seed: (i: number) => number },
): Float32Array {
  const prune = o.density < 1 && o.kind !== "linear";
  const magnitude = prune && (o.kind === "ties" || o.kind === "magnitude_prune");
  const random = prune && o.kind.startsWith("dare");
  const cuts = magnitude ? tensors.map((t) => magnitudeCut(t.map(Math.abs), o.density)) : undefined;
  return compute(backend, tensors[0]!.length, (g, input) => {
    let ts = tensors.map((t) => input(t, ne));
    if (cuts) ts = ts.map((t, i) => keepAtLeast(g, t, cuts[i]!));
    if (random) {
      ts = ts.map((t, i) => {
        const seed = o.seed(i);
        const mask = input(Float32Array.from(bernoulliMask(t.elements, o.density, seed)), ne);
        return g.scale(g.mul(t, mask), 1 / o.density);
      });
    }
    const weighted = ts.map((t, i) => g.scale(t, weights[i]!));
    if (o.kind === "ties" || o.kind === "dare_ties") {
      const agree = signAgreement(g, ts, o.majority === "total" ? "sum" : "count");
      const mixed = sumAll(g, weighted.map((w, i) => g.mul(w, agree[i]!)));
      return [g.div(mixed, oneIfZero(g, sumAll(g, agree)))];
    }
    return [sumAll(g, weighted)];
  })[0]!;
}

/** s_i B_i A_i of each adapter, PyTorch layout [out, in] (ggml [in, out]). */
function loraDeltas(backend: Backend, loras: ModuleLora[]): Float32Array[] {
  return compute(backend, loras[0]!.inFeatures * loras[0]!.outFeatures, (g, input) => loras.map((l) => {
    const a = input(l.a, [l.inFeatures, l.r, 1, 1]);
    const b = input(l.b, [l.r, l.outFeatures, 1, 1]);
    return g.scale(g.mulMat(g.cont(g.transpose(a)), b), l.scaling);
  }));
}

/**
 * PEFT's cat: A_i * weight_i * scaling_i stacked along the rank (rows of A, columns of B), padded
 * with zeros to the new rank. Each block is written through a ggml view of the result.
 */
function concatenate(backend: Backend, parts: { lora: ModuleLora; weight: number }[], rank: number): { a: Float32Array; b: Float32Array } {
  const { inFeatures, outFeatures } = parts[0]!.lora;
  return withThreadsFor(backend, inFeatures * outFeatures, () => concatenateOnBackend(backend, parts, rank));
}

function concatenateOnBackend(backend: Backend, parts: { lora: ModuleLora; weight: number }[], rank: number): { a: Float32Array; b: Float32Array } {
  const { inFeatures, outFeatures } = parts[0]!.lora;
  const store = new TensorStore(backend, "cat", 2);
  const g = new Graph(backend);
  try {
    const a = store.tensor("f32", [inFeatures, rank], "lora_A");
    const b = store.tensor("f32", [rank, outFeatures], "lora_B");
    store.allocate();
    const fills: [Tensor, Float32Array][] = [];
    let offset = 0;
    for (const { lora, weight } of parts) {
      const la = g.input("f32", [inFeatures, lora.r], `A ${offset}`);
      const lb = g.input("f32", [lora.r, outFeatures], `B ${offset}`);
      fills.push([la, lora.a], [lb, lora.b]);
      // rows [offset, offset + r) of A; columns [offset, offset + r) of B (row stride rank)
      g.copyInto(g.scale(la, weight * lora.scaling), g.view(a, [inFeatures, lora.r], [inFeatures * 4, inFeatures * lora.r * 4, inFeatures * lora.r * 4], offset * inFeatures * 4));
      g.copyInto(g.scale(lb, 1), g.view(b, [lora.r, outFeatures], [rank * 4, rank * outFeatures * 4, rank * outFeatures * 4], offset * 4));
      offset += lora.r;
    }
    g.allocate();
    for (const [t, data] of fills) t.setAll(data);
    g.compute();
    return { a: a.getF32(), b: b.getF32() };
  } finally {
    g.free();
    store.free();
  }
}

/** A [r, in] and B [out, r] as A [rank, in] and B [out, rank], the extra rows and columns zero. */
function padRank(a: Float32Array, b: Float32Array, r: number, rank: number, inFeatures: number, outFeatures: number): { a: Float32Array; b: Float32Array } {
  const paddedA = new Float32Array(rank * inFeatures);
  paddedA.set(a);
  const paddedB = new Float32Array(outFeatures * rank);
  for (let i = 0; i < outFeatures; i++) paddedB.set(b.subarray(i * r, (i + 1) * r), i * rank);
  return { a: paddedA, b: paddedB };
}

/** PEFT's svd_clamp: clamp U S and V^T to +-(the clamp quantile of all their values). */
function clampByQuantile(parts: Float32Array[], q: number): void {
  const all = Float64Array.from(parts.flatMap((p) => Array.from(p))).sort();
  const pos = q * (all.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(all.length - 1, lo + 1);
  const limit = all[lo]! + (all[hi]! - all[lo]!) * (pos - lo);
  for (const p of parts) for (let i = 0; i < p.length; i++) p[i] = Math.min(limit, Math.max(-limit, p[i]!));
}
