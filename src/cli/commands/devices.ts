import { blasUnavailableReason, listDevices } from "../../engine/backend.ts";
import { DEVICE_OPTIONS, DEVICE_USAGE, openBackend, parseCommand } from "../options.ts";
import type { Command } from "./index.ts";

const USAGE = `Usage: tasktune devices [--device cpu|cuda|vulkan|auto]\n\nLists the devices of the ggml build the device option selects.\n${DEVICE_USAGE}`;

export const devicesCommand: Command = {
  summary: "list the compute devices ggml sees",
  usage: USAGE,
  native: true,
  async run(args) {
    const { values } = parseCommand(args, DEVICE_OPTIONS, USAGE);
    const backend = await openBackend(values);
    process.stdout.write(`ggml ${backend.ggml.ggml_version()} (${backend.ggml.ggml_commit()}) from ${backend.binDir}\n`);
    for (const d of listDevices(backend.ggml)) {
      const mark = d.name === backend.device.name || (backend.blas && d.name === "BLAS") ? "*" : " ";
      process.stdout.write(`${mark} ${d.name.padEnd(12)} ${d.kind.padEnd(5)} ${(d.totalBytes / 2 ** 30).toFixed(1).padStart(6)} GiB  ${d.description}\n`);
    }
    if (backend.device.kind === "cpu" && !backend.blas) process.stdout.write(`BLAS: not used: ${blasUnavailableReason()}\n`);
    backend.close();
  },
};
