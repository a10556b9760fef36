"""Torch training and ONNX export of the LPEM U-Net (not shipped in the serving image)."""
