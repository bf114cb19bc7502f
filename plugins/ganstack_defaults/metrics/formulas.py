"""The arithmetic of the Inception Score and the Fréchet distance, as pure functions.

Kept apart from any network so it can be checked against hand-computed values. Everything is
computed in float64: FID subtracts large, nearly equal traces, and float32 loses digits there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _f64(x: ArrayLike) -> Tensor:
    return torch.as_tensor(x).detach().to(torch.float64)


def inception_score(probs: ArrayLike, splits: int) -> tuple[float, float]:
    """Inception Score of class probabilities ``probs`` ``[N, C]`` (rows sum to 1).

    As in the reference implementation: the rows are cut into ``splits`` consecutive chunks of
    ``N // splits`` (a remainder is dropped); each chunk scores ``exp(mean_x KL(p(y|x) || p(y)))``
    with ``p(y)`` the chunk's mean row; returns the mean and the population std over chunks.
    """
    p = _f64(probs)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, classes], got shape {tuple(p.shape)}")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be in [1, {p.shape[0]}] for {p.shape[0]} rows, got {splits}")
    size = p.shape[0] // splits
    scores = []
    for k in range(splits):
        part = p[k * size:(k + 1) * size]
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(correction=0))


class FeatureMoments:
    """Running mean and covariance of feature batches, so no ``[N, D]`` matrix is ever held."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: Tensor | None = None
        self._outer: Tensor | None = None

    def add(self, features: Tensor) -> None:
        x = features.detach().to(torch.float64).flatten(1)
        if self._sum is None:
            self._sum = x.new_zeros(x.shape[1])
            self._outer = x.new_zeros(x.shape[1], x.shape[1])
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.count += x.shape[0]

    def stats(self) -> tuple[Tensor, Tensor]:
        """Mean ``[D]`` and unbiased covariance ``[D, D]`` (as ``numpy.cov``), on the CPU."""
        if self.count < 2 or self._sum is None or self._outer is None:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        mu = self._sum / self.count
        sigma = (self._outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return mu.cpu(), ((sigma + sigma.T) / 2).cpu()


def _psd_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and vectors of a symmetric PSD matrix, robust to what features give in practice.

    Near-constant features give covariances of 1e-17, where LAPACK's divide-and-conquer ``eigh`` can
    fail to converge: the matrix is then scaled to unit size and tried again, and if that fails too,
    the SVD gives the eigenvectors (the Rayleigh quotients keep the eigenvalues' signs).
    """
    sym = (matrix + matrix.T) / 2
    try:
        return torch.linalg.eigh(sym)
    except torch.linalg.LinAlgError:
        pass
    scale = sym.abs().max()
    if scale == 0:
        return torch.zeros(sym.shape[0], dtype=sym.dtype), torch.eye(sym.shape[0], dtype=sym.dtype)
    try:
        w, v = torch.linalg.eigh(sym / scale)
    except torch.linalg.LinAlgError:
        v = torch.linalg.svd(sym / scale)[0]
        w = torch.einsum("ij,jk,ki->i", v.T, sym / scale, v)
    return w * scale, v


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues read as 0)."""
    w, v = _psd_eigh(matrix)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2))``, where the last trace is taken as
    ``tr((sqrt(s1) s2 sqrt(s1))^(1/2))``: that matrix is symmetric PSD with the same eigenvalues as
    ``s1 s2``, so ``eigh`` gives it stably, without the complex parts a general sqrtm produces.
    """
    m1, m2, s1, s2 = _f64(mu1), _f64(mu2), _f64(sigma1), _f64(sigma2)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.numel(), m1.numel()):
        raise ValueError(f"shapes do not match: mu {tuple(m1.shape)}/{tuple(m2.shape)}, "
                         f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}")
    root1 = sqrtm_psd(s1)
    middle = root1 @ s2 @ root1
    trace_sqrt = _psd_eigh(middle)[0].clamp(min=0).sqrt().sum()
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt)
