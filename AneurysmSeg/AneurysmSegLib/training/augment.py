"""Augmentation: the paper's x8 (flips, Gaussian filtering, histogram equalisation) plus intensity and
resolution randomisation (gamma, contrast, noise, blur, down/up-sampling) so that a model trained on
one phantom scanner meets other scanners' contrast, noise and resolution.

Geometric transforms (flips) move the image channels and the label together; intensity transforms
touch only channel 0 (the z-scored image): the contour channel comes from the artery mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def flip(x: np.ndarray, y: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Flip the spatial ``axes`` (0 = z, 1 = y, 2 = x) of x (C, Z, Y, X) and y (Z, Y, X) together.

    Works for centred pairs of different sizes too (a 57^3 input with its 9^3 target): both are
    mirrored about their common centre.
    """
    for a in axes:
        x = np.flip(x, axis=a + 1)
        y = np.flip(y, axis=a)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def histogram_equalise(img: np.ndarray, bins: int = 256) -> np.ndarray:
    """Histogram equalisation of one channel, rescaled back to the channel's mean and std (keeps the
    z-score scale the network expects)."""
    flat = img.ravel()
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return img.copy()
    hist, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf /= cdf[-1]
    eq = np.interp(flat, edges[1:], cdf).reshape(img.shape)
    s = eq.std()
    if s <= 0:
        return img.copy()
    return ((eq - eq.mean()) / s * img.std() + img.mean()).astype(img.dtype)


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    """Gamma on the min-max normalised channel, mapped back to the original range."""
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return img.copy()
    u = (img - lo) / (hi - lo)
    return (np.power(u, g) * (hi - lo) + lo).astype(img.dtype)


def resolution(img: np.ndarray, factor: float) -> np.ndarray:
    """Down-sample by ``factor`` (< 1) and back (linear): a coarser scanner resolution."""
    small = ndimage.zoom(img, factor, order=1)
    back = ndimage.zoom(small, np.array(img.shape) / np.array(small.shape), order=1)
    out = np.empty_like(img)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(img.shape, back.shape))
    out[...] = img
    out[sl] = back[sl]
    return out


def augment_fine(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, strength: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Random x8-style augmentation of one fine VOI (x (C, 64^3), y (64^3)); shapes are kept.

    Flips on each axis (p 0.5); Gaussian filtering (p 0.2), histogram equalisation (p 0.15), gamma,
    contrast, noise (p 0.3 each) and a resolution change (p 0.15) on the image channel.
    """
    axes = tuple(a for a in range(3) if rng.random() < 0.5)
    x, y = flip(x, y, axes)
    x = x.copy()
    img = x[0]
    if rng.random() < 0.2 * strength:
        img = ndimage.gaussian_filter(img, float(rng.uniform(0.4, 1.0)))
    if rng.random() < 0.15 * strength:
        img = histogram_equalise(img)
    if rng.random() < 0.3 * strength:
        img = gamma(img, float(np.exp(rng.uniform(np.log(0.7), np.log(1.5)))))
    if rng.random() < 0.3 * strength:
        m = img.mean()
        img = (img - m) * float(rng.uniform(0.75, 1.3)) + m + float(rng.normal(0.0, 0.2))
    if rng.random() < 0.15 * strength:
        img = resolution(img, float(rng.uniform(0.5, 0.85)))
    if rng.random() < 0.3 * strength:
        img = img + rng.normal(0.0, float(rng.uniform(0.02, 0.15)) * max(float(img.std()), 1e-3),
                               size=img.shape).astype(img.dtype)
    x[0] = img.astype(np.float32)
    return x, y


def augment_coarse(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cheap augmentation of a coarse segment pair (x (1, 57^3), y (9^3)): flips, scale/shift, noise."""
    axes = tuple(a for a in range(3) if rng.random() < 0.5)
    x, y = flip(x, y, axes)
    x = x * float(rng.uniform(0.85, 1.15)) + float(rng.normal(0.0, 0.1))
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, float(rng.uniform(0.02, 0.15)), size=x.shape).astype(x.dtype)
    return x.astype(np.float32), y
