"""Streaming preprocessing keeps peak memory bounded: a 6x larger input must not need proportionally more."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from recsys_emb.data.synthetic import generate_criteo_like

_CHILD = r"""
import json, resource, sys
from recsys_emb.data.criteo import preprocess

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

samples = []
def tick(phase, rows):  # sampled current RSS: a fallback where the peak cannot be reset
    samples.append(status("VmRSS"))

base = status("VmRSS")
try:  # reset the kernel's peak-RSS mark (VmHWM) so that imports do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    resettable = True
except OSError:
    resettable = False
preprocess(sys.argv[1], sys.argv[2], chunk_bytes=64 << 10, row_group_rows=1 << 14, progress=tick)
peak = status("VmHWM") if resettable else max(samples)
print(json.dumps({"base_kib": base, "peak_kib": peak, "resettable": resettable,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak(tsv, out):
    # The system allocator returns freed memory, so peak RSS reflects what the code holds, not what a
    # caching allocator (Arrow's default mimalloc) keeps around.
    env = dict(os.environ, ARROW_DEFAULT_MEMORY_POOL="system", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _CHILD, str(tsv), str(out)], env=env, check=True,
                         capture_output=True, text=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return (r["peak_kib"] - r["base_kib"]) * 1024


def test_peak_memory_does_not_grow_with_input_size(tmp_path):
    small = generate_criteo_like(tmp_path / "s", 25_000, scale=0.001, seed=1)
    large = generate_criteo_like(tmp_path / "l", 160_000, scale=0.001, seed=1)
    small_bytes, large_bytes = small.tsv.stat().st_size, large.tsv.stat().st_size
    assert large_bytes > 500 * (64 << 10)  # far larger than the 64 KiB chunk
    grow_small = _peak(small.tsv, tmp_path / "ps")
    grow_large = _peak(large.tsv, tmp_path / "pl")
    extra = grow_large - grow_small
    print(f"input {small_bytes / 1e6:.1f} MB -> +{grow_small / 1e6:.1f} MB peak; "
          f"{large_bytes / 1e6:.1f} MB -> +{grow_large / 1e6:.1f} MB peak")
    # Memory may grow with the vocabulary (distinct ids), never with the rows: holding the large file's
    # parsed rows alone would take ~50 MB more. Allow 24 MB (vocabulary, allocator noise).
    assert extra < 24e6, (grow_small, grow_large)
    assert grow_large < 150e6
