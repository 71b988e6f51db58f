# Loads a base model and an adapter with transformers + PEFT and writes the logits of the
# reference batch: proof that an adapter tasktune saved loads in PEFT unchanged.
# Usage: python3 peft_logits.py <base_dir> <adapter_dir> <input.safetensors> <out.safetensors>
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

base_dir, adapter_dir, inputs, out = sys.argv[1:5]
model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(model, adapter_dir)
model.eval()
ids = load_file(inputs)["input_ids"].long()
with torch.no_grad():
    logits = model(input_ids=ids).logits
save_file({"logits": logits.contiguous()}, out)
