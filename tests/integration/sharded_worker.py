"""One rank of the 2-process sharding test (run by tests/integration/test_sharded_layers.py).

For every variant and sharding type: the DMP-sharded layer's forward on this rank's batch equals the
unsharded layer's; after one fused SGD step, the next forward equals the unsharded layer updated
with the gradient of the global batch averaged over ranks (TorchRec divides the table gradients by
the world size in the all-to-all backward, matching DDP's mean for the dense parameters).
Writes one JSON line per case to argv[1] + f".rank{rank}".
"""

import copy
import json
import logging
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from recsys_emb.training.launch import exit_worker  # noqa: E402
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists  # noqa: E402
from recsys_emb.sharding import plan_report, shard_model  # noqa: E402
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.specs import FeatureSpec, Full  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run as a script
from variant_cases import small_variants  # noqa: E402

VARIANTS = small_variants()


def batch(rank):
    g = torch.Generator().manual_seed(100 + rank)
    bags = {"x": [torch.randint(0, 50, (int(n),), generator=g).tolist() for n in torch.randint(0, 3, (6,), generator=g)],
            "y": [[int(i)] for i in torch.randint(0, 7, (6,), generator=g)],
            "z": [[int(i)] for i in torch.randint(0, 50, (6,), generator=g)]}
    return bags


def main():
    out_path = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    lr = 0.1
    results = []
    for sharding in ("table_wise", "column_wise"):
        for name, feats in VARIANTS.items():
            specs = feats + [FeatureSpec("y", Full(dim=8), cardinality=7)]
            keys = [s.name for s in specs]
            torch.manual_seed(0)
            layer = EmbeddingLayer(specs)
            ref = copy.deepcopy(layer)
            dmp = shard_model(layer, EmbeddingOptimizer("sgd", lr=lr), sharding_types=[sharding])
            local = {k: batch(rank)[k] for k in keys}
            out = dmp(kjt_from_lists(local)).values()
            expect = ref(kjt_from_lists(local)).values()
            fwd = (out - expect).abs().max().item()
            up = torch.ones_like(out) * (rank + 1)
            (out * up).sum().backward()
            # reference: the global batch's gradient (each rank's loss with its own upstream)
            for r in range(world):
                y = ref(kjt_from_lists({k: batch(r)[k] for k in keys})).values()
                (y * (r + 1)).sum().backward()
            with torch.no_grad():
                for pname, p in ref.named_parameters():
                    if ".embedding_bags." in pname:
                        p -= lr * p.grad / world
            dense_err = 0.0
            for (pname, p), (_, q) in zip(sorted((n, p) for n, p in dmp.named_parameters() if "variants" in n),
                                          sorted((n, p) for n, p in ref.named_parameters() if "variants" in n)):
                dense_err = max(dense_err, (p.grad - q.grad / world).abs().max().item())
            after = (dmp(kjt_from_lists(local)).values() - ref(kjt_from_lists(local)).values()).abs().max().item()
            report = plan_report(dmp)
            types = sorted({r["sharding_type"] for r in report})
            spans = max(len({s["rank"] for s in r["shards"]}) for r in report)  # ranks holding one table
            results.append({"variant": name, "sharding": sharding, "types": types, "spans": spans, "forward": fwd,
                            "after_step": after, "dense_grad": dense_err})
    with open(f"{out_path}.rank{rank}", "w") as fh:
        for r in results:
            fh.write(json.dumps(r) + "\n")
    dist.barrier()  # both ranks done before either tears gloo down (else one can abort at exit)
    dist.destroy_process_group()


if __name__ == "__main__":
    # here, not at import: pytest's --doctest-modules imports this file, and a process-wide
    # logging.disable there silenced the INFO logs other tests read
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    main()
    exit_worker(0)  # skip finalisers: gloo threads torn down there can abort a finished worker
