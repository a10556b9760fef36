"""What the SEM service runs: image preparation (``images``), the autoencoder's lens and
embedding over windows of any size (``lens``), and reconstruction-error anomaly maps (``anomaly``)."""
