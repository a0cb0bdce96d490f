"""TorchRec's managed-collision remap (``MCHManagedCollisionModule``) in front of a ``zch_size``-row table."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.errors import InvalidInputError
from recsys_emb.specs import FeatureSpec, ManagedCollision
from recsys_emb.torch_stack import require_torch_stack

__all__ = ["ManagedCollisionEmbedding"]

logger = logging.getLogger(__name__)

_NO_ID = torch.iinfo(torch.int64).max
"""TorchRec's marker of a free slot: this id cannot be admitted."""


def _policy(eviction: str) -> Any:
    from torchrec.modules.mc_modules import DistanceLFU_EvictionPolicy, LFU_EvictionPolicy, LRU_EvictionPolicy

    return {"lfu": LFU_EvictionPolicy, "lru": LRU_EvictionPolicy, "distance_lfu": DistanceLFU_EvictionPolicy}[eviction]()


class ManagedCollisionEmbedding(EmbeddingVariant):
    """A :class:`~recsys_emb.specs.ManagedCollision` feature: TorchRec's ``MCHManagedCollisionModule``
    (``self.mc``, its buffers in the layer's state dict) maps ids to rows of the feature's ordinary
    table in the layer's collection.

    ``remap`` runs the module's forward: in train mode it records the ids and, every
    ``eviction_interval`` calls, admits and evicts ids (then takes the evicted slots, as TorchRec's
    ``ManagedCollisionEmbeddingBagCollection`` does, leaving their rows as they are); in eval mode it
    only looks ids up. Two additions keep a run the same whatever its batches and checkpoints: the
    module's history of ids since the last eviction grows when a batch would overflow it (TorchRec sizes
    it from the first batch and drops the excess ids of a larger one), and a loaded state keeps the saved
    run's eviction schedule. The state dict holds the remap (TorchRec's persistent buffers: admitted
    ids, their slots, the policy's metadata, the iteration), so a run resumed from a checkpoint taken
    at an eviction (every step with ``eviction_interval=1``) continues exactly; one taken between
    evictions lacks the ids recorded since the last one (a warning says so).

    Example (``eviction_interval=1``: ids are admitted by the forward that first sees them):
        >>> from recsys_emb.specs import ManagedCollision
        >>> v = ManagedCollisionEmbedding(FeatureSpec("C1", ManagedCollision(dim=8, zch_size=4)))
        >>> v.remap(torch.tensor([10, 11, 10]), torch.tensor([2, 1]))[0][0].tolist()
        [1, 2, 1]
        >>> _ = v.eval(); v.remap(torch.tensor([12, 11]), torch.tensor([1, 1]))[0][0].tolist()  # 12: the miss row
        [3, 2]
    """

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        spec = feature.embedding
        assert isinstance(spec, ManagedCollision)
        require_torch_stack()
        from torchrec.modules.mc_modules import MCHManagedCollisionModule

        self.spec = spec
        self.mc = MCHManagedCollisionModule(zch_size=spec.zch_size, device=torch.device("cpu"),
                                            eviction_policy=_policy(spec.eviction),
                                            eviction_interval=spec.eviction_interval, name=feature.table_owner)
        self.register_load_state_dict_post_hook(self._after_load)

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(self.feature.name, self.feature.table_owner)]

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Rows in ``[0, zch_size)`` of ``ids (n,)``: admitted ids their slots, the others ``zch_size - 1``."""
        from torchrec.sparse.jagged_tensor import JaggedTensor

        if self.training:
            if self.validate_ids and ids.numel() and bool((ids == _NO_ID).any()):
                raise InvalidInputError(f"feature {self.feature.name!r}: id {_NO_ID} is TorchRec's free-slot marker "
                                        f"in a managed-collision remap; hash or remap it to another id")
            self._reserve_history(int(ids.numel()))
        key = self.feature.table_owner
        out = self.mc({key: JaggedTensor(values=ids, lengths=lengths)})
        if self.training:
            self.mc.evict()  # take the evicted slots (their rows stay, as TorchRec's MC collections leave them)
        return [(out[key].values(), lengths)]

    # ------------------------------------------------------------------ the history between evictions
    def _reserve_history(self, n: int) -> None:
        """Make room for ``n`` more ids in the module's history (kept in order), so that none is dropped."""
        mc = self.mc
        if mc.device != self.mc._mch_sorted_raw_ids.device:  # the layer moved: new buffers follow it
            mc._device = self.mc._mch_sorted_raw_ids.device
        used = mc._current_history_buffer_offset
        if mc._input_history_buffer_size != -1 and used + n <= mc._input_history_buffer_size:
            return
        self._resize_history(max(used + n, 1))

    def _resize_history(self, at_least: int) -> None:
        from torchrec.sparse.jagged_tensor import JaggedTensor

        mc = self.mc
        used = mc._current_history_buffer_offset
        old_ids = mc._history_accumulator[:used].clone() if used else None
        old_meta = {k: v[:used].clone() for k, v in mc._history_metadata.items()} if used else {}
        per_batch = -(-at_least // mc._eviction_interval)  # TorchRec sizes it as 1.25 x interval x batch ids
        mc._init_history_buffers({"ids": JaggedTensor(values=torch.empty(per_batch, dtype=torch.int64),
                                                      lengths=torch.tensor([per_batch]))})
        if old_ids is not None:
            mc._history_accumulator[:used] = old_ids
            for k, v in old_meta.items():
                mc._history_metadata[k][:used] = v

    def _after_load(self, module: Any, incompatible: Any) -> None:
        """Keep the eviction schedule of the run that saved the state: TorchRec resumes its iteration from
        the saved counter but counts the next interval from the resume. A state saved between evictions
        lost the ids recorded since the last one (TorchRec does not save them): said in a warning."""
        mc = self.mc
        it = int(mc._current_iter_tensor.item())
        mc._current_iter = it
        mc._last_eviction_iter = it - it % mc._eviction_interval
        mc._current_history_buffer_offset = 0
        if it % mc._eviction_interval:
            logger.warning("feature %r: its managed-collision state was saved %d iteration(s) after an eviction "
                           "(eviction_interval=%d); the ids it saw in them are not in the state, so the next "
                           "eviction counts fewer ids than the uninterrupted run would (save at multiples of "
                           "the interval to resume exactly)", self.feature.name, it % mc._eviction_interval,
                           mc._eviction_interval)
