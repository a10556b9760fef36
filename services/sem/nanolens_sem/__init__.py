"""NanoLens SEM service: an autoencoder lens, embeddings, classifier heads and anomaly maps."""
