"""Inference: a trained model as a module over plain tensors with fp32, fp16 or int8 tables, exported with
``torch.export`` to a file that any process with torch loads (:mod:`~recsys_emb.inference.module`,
:mod:`~recsys_emb.inference.tables`, :mod:`~recsys_emb.inference.program`; docs/serving.md)."""

from recsys_emb.inference.module import InferenceModule, bag_sum, inference_module
from recsys_emb.inference.program import (PROGRAM_FILE, SIGNATURE_FILE, KJTScorer, example_inputs, export_program,
                                          load_program, signature, write_exported)
from recsys_emb.inference.tables import StoredTable, dequantize_rowwise, quantize_rowwise

__all__ = ["InferenceModule", "inference_module", "bag_sum", "StoredTable", "quantize_rowwise", "dequantize_rowwise",
           "PROGRAM_FILE", "SIGNATURE_FILE", "KJTScorer", "example_inputs", "export_program", "load_program",
           "signature", "write_exported"]
