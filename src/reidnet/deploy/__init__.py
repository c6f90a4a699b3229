"""Deployment files of a checkpoint: the ONNX graph with its metadata and parity check (onnx.py),
DeepStream and TensorRT configs beside it (deepstream.py).

The export action (reidnet.actions.export) drives both. Running a graph is embedding, not
deployment: reidnet.runtime.onnx_backend. The submodules import torch and onnx, so nothing here
is imported by `import reidnet`.
"""
