# The same bench configuration in PyTorch + transformers (+ PEFT for LoRA), on the same CPU
# threads or the same GPU; prints one JSON line. Usage: python3 bench/torch_bench.py '<config json>'
# On a GPU the base weights are in the configuration's weightDtype and PEFT keeps the adapters in
# float32 (autocast_adapter_dtype), as tasktune does; attention is transformers' default (SDPA).
import json
import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

config = json.loads(sys.argv[1])
device = config.get("device", "cpu")
dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[config.get("weightDtype", "f32")]
torch.set_num_threads(config["threads"])
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(hidden_act="silu", rms_norm_eps=1e-5, max_position_embeddings=2048, **config["model"]))
model = model.to(device=device, dtype=dtype)
if config["method"] == "lora":
    from peft import LoraConfig, get_peft_model

    r = config["loraRank"]
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=1e-4)
B, S = config["batchSize"], config["seqLen"]
times = []
for step in range(config["warmupSteps"] + config["timedSteps"]):
    ids = torch.randint(0, config["model"]["vocab_size"], (B, S), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    if step >= config["warmupSteps"]:
        times.append(time.perf_counter() - t0)
times.sort()
step_ms = times[len(times) // 2] * 1000
print(json.dumps({
    "name": config["name"], "tokens_per_s": round(B * S * 1000 / step_ms), "step_ms": round(step_ms, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "trainable_params": sum(p.numel() for p in params), "torch": torch.__version__,
    **({"device": torch.cuda.get_device_name(), "device_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if device == "cuda" else {}),
}))
