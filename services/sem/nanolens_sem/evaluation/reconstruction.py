"""Reconstruction on tiles the autoencoder never saw, against PCA with the same latent size (the
linear autoencoder) fitted on tiles of the same training images."""

from __future__ import annotations

import numpy as np

TILE = 64
LATENT = 128  # the autoencoder's latent numbers per 64 x 64 tile (4 x 4 x 8)


def grid_tiles(images, tile: int = TILE, step: int = TILE) -> np.ndarray:
    """Every non-overlapping tile of each image (N x tile x tile float32)."""
    out = [img[r:r + tile, c:c + tile] for img in images
           for r in range(0, img.shape[0] - tile + 1, step) for c in range(0, img.shape[1] - tile + 1, step)]
    return np.stack(out).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)])


def autoencoder_reconstruct(session, tiles: np.ndarray, batch: int = 64) -> np.ndarray:
    outs = [session.run(["reconstruction"], {"image": tiles[i:i + batch, None]})[0][:, 0]
            for i in range(0, len(tiles), batch)]
    return np.concatenate(outs)


def pca_reconstruct(train_tiles: np.ndarray, tiles: np.ndarray, components: int = LATENT, seed: int = 0):
    from sklearn.decomposition import PCA

    pca = PCA(components, random_state=seed).fit(train_tiles.reshape(len(train_tiles), -1))
    flat = pca.inverse_transform(pca.transform(tiles.reshape(len(tiles), -1)))
    return np.clip(flat.reshape(tiles.shape), 0, 1).astype(np.float32)


def compare(session, train_images, test_images) -> dict:
    """PSNR and SSIM (means over tiles) of the autoencoder and of PCA on ``test_images``' tiles."""
    train_tiles, test_tiles = grid_tiles(train_images, step=TILE // 2), grid_tiles(test_images)
    ae = autoencoder_reconstruct(session, test_tiles)
    pca = pca_reconstruct(train_tiles, test_tiles)
    return {"n_test_tiles": int(len(test_tiles)), "n_pca_train_tiles": int(len(train_tiles)),
            "ae_psnr_db": float(psnr(ae, test_tiles).mean()), "pca_psnr_db": float(psnr(pca, test_tiles).mean()),
            "ae_ssim": float(ssim(ae, test_tiles).mean()), "pca_ssim": float(ssim(pca, test_tiles).mean())}
