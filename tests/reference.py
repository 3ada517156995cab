"""Slow, explicit per-sample implementations written straight from the equations of the core issue.

Layout (D, N) data, (D, R) bases, (R, N) codes, one sample at a time, plain out-of-place maths.
Each returns (recon, bases after K steps, codes of step K, final codes).
"""

import torch
import torch.nn.functional as F


def nmf(x, bases, steps, eps=1e-6):
    out = []
    for X, D in zip(x, bases):
        C = torch.softmax(D.T @ X, dim=0)  # t = 1, softmax over R

        def codes(C, D, X=X):
            return C * (D.T @ X) / (D.T @ D @ C + eps)

        for _ in range(steps):
            C = codes(C, D)
            D = D * (X @ C.T) / (D @ C @ C.T + eps)
        Ck = C
        C = codes(C, D)
        out.append((D @ C, D, Ck, C))
    return [torch.stack(t) for t in zip(*out)]


def vq(x, bases, steps, inv_t=100.0, eps=1e-6):
    out = []
    for X, D in zip(x, bases):
        C = torch.softmax(inv_t * D.T @ X, dim=0)  # C0 (overwritten by the first step)
        for _ in range(steps):
            Xh = F.normalize(X, dim=0)
            Dh = F.normalize(D, dim=0, eps=1e-6)
            C = torch.softmax(inv_t * Dh.T @ Xh, dim=0)
            C = C / (eps + C.sum(dim=1, keepdim=True))
            D = X @ C.T
        Ck = C
        Dh = F.normalize(D, dim=0, eps=1e-6)
        C = torch.softmax(inv_t * Dh.T @ (X / (eps + X.norm(dim=0, keepdim=True))), dim=0)
        out.append((D @ C, D, Ck, C))
    return [torch.stack(t) for t in zip(*out)]


def cd(x, bases, steps, inv_t=100.0, beta=0.1, eps=1e-6):
    out = []
    for X, D in zip(x, bases):
        C = torch.softmax(inv_t * D.T @ X, dim=0)
        for _ in range(steps):
            Xh = F.normalize(X, dim=0)
            C = torch.softmax(inv_t * D.T @ Xh, dim=0)
            C = C / (eps + C.sum(dim=1, keepdim=True))
            D = F.normalize(X @ C.T, dim=0, eps=1e-6)
        Ck = C
        eye = torch.eye(D.shape[1], dtype=D.dtype)
        C = torch.linalg.solve(D.T @ D + beta * eye, D.T @ X)
        out.append((D @ C, D, Ck, C))
    return [torch.stack(t) for t in zip(*out)]
