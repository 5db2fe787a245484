"""What the pipeline and the API share: image preprocessing, its constants, ONNX inference.

Only numpy, Pillow and ONNX Runtime are imported here (never torch, never the pipeline), so the
API installs and starts without the training stack, and what is evaluated is what is served.
"""
