// groupedOrder (engine/run-order.ts): a topological order of a graph split between BLAS and the
// CPU backend with fewer switches between them than ggml's DFS order.
import { test } from "node:test";
import assert from "node:assert/strict";
import { groupedOrder, type OrderNode } from "../src/engine/run-order.ts";

const runs = (nodes: readonly OrderNode[], order: number[]) =>
  order.map((i) => nodes[i].kind).filter((k) => k !== "free").filter((k, i, all) => i === 0 || k !== all[i - 1]).length;

test("q, k and v's projections share one BLAS run, their ropes one CPU run; every dependency is kept", () => {
  // ggml's DFS order of an attention block: x, q = Wq x, rope(q), k = Wk x, rope(k), view(k),
  // v = Wv x, scores = k q (BLAS), softmax.
  const nodes: OrderNode[] = [
    { kind: "cpu", deps: [] }, // 0 x
    { kind: "blas", deps: [0] }, // 1 q
    { kind: "cpu", deps: [1] }, // 2 rope q
    { kind: "blas", deps: [0] }, // 3 k
    { kind: "cpu", deps: [3] }, // 4 rope k
    { kind: "free", deps: [4] }, // 5 view of rope k
    { kind: "blas", deps: [0] }, // 6 v
    { kind: "blas", deps: [2, 5] }, // 7 scores
    { kind: "cpu", deps: [7] }, // 8 softmax
  ];
  const order = groupedOrder(nodes);
  assert.deepEqual(order, [0, 1, 3, 6, 2, 4, 5, 7, 8]);
  assert.equal(runs(nodes, nodes.map((_, i) => i)), 7);
  assert.equal(runs(nodes, order), 5);
  const position = new Map(order.map((node, at) => [node, at]));
  nodes.forEach((node, i) => node.deps.forEach((d) => assert.ok(position.get(d)! < position.get(i)!, `${d} must precede ${i}`)));
});

test("a dependency on a later node is refused", () => {
  assert.throws(() => groupedOrder([{ kind: "cpu", deps: [1] }, { kind: "cpu", deps: [] }]), /node 0 depends on 1/);
});
