"""Peak memory: weights are used in place from the mapped file, not copied."""

import json
import subprocess
import sys

SCRIPT = r"""
import json, re, sys
from llama_local import LLM
llm = LLM(sys.argv[1], n_ctx=4096)
text = "".join(c.text for c in llm.generate("Tell me about the sea.", max_tokens=24, temperature=0))
# VmHWM: this process's own peak RSS. (ru_maxrss would include the parent's: Linux carries it
# across fork and exec, and the parent is a pytest process holding torch.)
hwm_kib = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"maxrss": hwm_kib * 1024,
                  "weights": llm.model.weight_bytes, "kv": llm.model.kv_bytes, "text": text}))
"""


def test_peak_rss_within_budget_of_weights_plus_kv(smollm2_dir):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(smollm2_dir)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["text"].strip()
    # DESIGN.md: peak RSS <= 1.15 x (weights + KV cache), interpreter and libraries included.
    assert r["maxrss"] <= 1.15 * (r["weights"] + r["kv"]), r
