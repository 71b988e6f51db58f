// A compute order for a graph split between two backends (engine/graph.ts planSplits) that keeps
// nodes of one backend together as long as dependencies allow: each switch between ggml's CPU
// threads and BLAS's OpenMP threads wakes one pool and puts the other to sleep.

/** What computes a node: BLAS, ggml's CPU backend, or nothing (views and reshapes). */
export type RunKind = "blas" | "cpu" | "free";

export interface OrderNode {
  kind: RunKind;
  /** Indices of the nodes that must come before this one (all smaller than its own index). */
  deps: readonly number[];
}

/**
 * A topological order of `nodes` (given in a valid order) by list scheduling: stay on the current
 * backend while any of its nodes is ready, switch when none is; among ready nodes of a kind take
 * the earliest in the given order, so the result stays close to it (and so does memory use).
 * Nodes that do no work are placed as soon as they are ready.
 */
export function groupedOrder(nodes: readonly OrderNode[]): number[] {
  const users: number[][] = nodes.map(() => []);
  const waiting = new Int32Array(nodes.length);
  nodes.forEach((node, i) => {
    const deps = new Set(node.deps);
    for (const d of deps) {
      if (!(d >= 0 && d < i)) throw new Error(`groupedOrder: node ${i} depends on ${d}, which is not an earlier node`);
      users[d].push(i);
    }
    waiting[i] = deps.size;
  });
  const ready: Record<RunKind, MinHeap> = { blas: new MinHeap(), cpu: new MinHeap(), free: new MinHeap() };
  nodes.forEach((node, i) => {
    if (waiting[i] === 0) ready[node.kind].push(i);
  });
  const order: number[] = [];
  let current: "blas" | "cpu" = "cpu";
  while (order.length < nodes.length) {
    const next = ready.free.pop() ?? ready[current].pop() ?? ready[(current = current === "cpu" ? "blas" : "cpu")].pop();
    if (next === undefined) throw new Error("groupedOrder: internal: no node is ready");
    order.push(next);
    for (const user of users[next]) {
      if (--waiting[user] === 0) ready[nodes[user].kind].push(user);
    }
  }
  return order;
}

/** A binary min-heap of node indices. */
class MinHeap {
  private readonly items: number[] = [];

  push(x: number): void {
    const items = this.items;
    items.push(x);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= x) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = x;
  }

  pop(): number | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= items.length) break;
        const child = left + 1 < items.length && items[left + 1] < items[left] ? left + 1 : left;
        if (items[child] >= last) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}
