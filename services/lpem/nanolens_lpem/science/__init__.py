"""What the LPEM service runs: segmentation, tracking, dynamics (numpy, scipy, scikit-image, trackpy)."""
