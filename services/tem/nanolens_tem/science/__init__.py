"""What particle-sizing serving runs: segmentation methods and the measures on their output (numpy, scipy,
scikit-image, onnxruntime). The sha256 of this package is part of every stored result's identity."""
