# Loads a base model and an adapter with transformers + PEFT and writes the logits of the
# reference batch: proof that an adapter tasktune saved loads in PEFT unchanged.
# Usage: python3 peft_logits.py <base_dir> <adapter_dir> <input.safetensors> <out.safetensors> [seq-cls]
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

base_dir, adapter_dir, inputs, out = sys.argv[1:5]
auto = AutoModelForSequenceClassification if sys.argv[5:] == ["seq-cls"] else AutoModelForCausalLM
model = auto.from_pretrained(base_dir, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(model, adapter_dir)
model.eval()
batch = {k: v.long() for k, v in load_file(inputs).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
with torch.no_grad():
    logits = model(**batch).logits
save_file({"logits": logits.contiguous()}, out)
