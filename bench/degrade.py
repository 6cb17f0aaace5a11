"""Benchmark of the degradation engine against reference libraries, same inputs, one run.

* CT low dose at 512x512 with 720 views: ours (Fourier-gridding Radon + FBP, a batch of
  slices) vs scikit-image ``radon`` + ``iradon`` (per slice).
* MR ghosting / motion / bias field vs TorchIO; Gibbs / Rician vs MONAI.
* GPU slices per second (prints "no GPU" without CUDA).

Usage: ``python bench/degrade.py [--batch 8] [--repeats 3]``. Ratios are baseline time
divided by ours (higher is better).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: tests/ holds the image loaders


def timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(ours: Callable[[], object], baseline: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` times of both, interleaved so background load hits both alike."""
    best_ours = best_base = float("inf")
    for _ in range(repeats):
        best_ours = min(best_ours, timed(ours, 1))
        best_base = min(best_base, timed(baseline, 1))
    return best_ours, best_base


def ct_slices(batch: int) -> tuple[np.ndarray, float]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from tests.synthesis.degradation_images import DATA

    paths = sorted((DATA / "ct_3slice_seg").glob("*.dcm"))
    hu = []
    spacing = 0.7
    for path in paths:
        ds = pydicom.dcmread(path)
        hu.append(apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
        spacing = float(ds.PixelSpacing[0])
    stack = np.stack([hu[i % len(hu)] for i in range(batch)])
    return stack, spacing


def bench_ct(batch: int, repeats: int) -> None:
    from skimage.transform import iradon, radon

    from synthesis.degradation import degrade
    from synthesis.degradation.ct import MU_WATER_PER_MM, hu_to_mu

    slices, spacing = ct_slices(batch)
    angles_deg = np.arange(720) * 180.0 / 720
    t0 = time.perf_counter()
    degrade(slices[:1], modality="CT", kind="low_dose", severity=2, seed=0, spacing_mm=spacing)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)

    def skimage_low_dose(hu: np.ndarray) -> np.ndarray:
        mu = hu_to_mu(torch.from_numpy(hu), spacing).numpy()
        sino = radon(mu, angles_deg, circle=False)
        counts = rng.poisson(2.0e5 * np.exp(-sino)) + rng.normal(0, 5.0, sino.shape)
        noisy = -np.log(np.clip(counts, 1, None) / 2.0e5)
        recon = iradon(noisy, angles_deg, circle=False, filter_name="ramp", output_size=hu.shape[0])
        return recon / (MU_WATER_PER_MM * spacing) * 1000 - 1000

    ours, sk_one = compare(
        lambda: degrade(slices, modality="CT", kind="low_dose", severity=2, seed=0, spacing_mm=spacing),
        lambda: skimage_low_dose(slices[0]),
        max(3, repeats // 2),
    )
    ours_per = ours / batch
    print(f"CT low dose 512x512, 720 views, batch {batch}: ours {ours_per * 1000:.0f} ms/slice "
          f"(operator build once {build:.1f} s), scikit-image radon+iradon {sk_one * 1000:.0f} ms/slice, "
          f"ratio {sk_one / ours_per:.1f}x (goal >= 20x)")


def kernel_only(kind: str, images: np.ndarray, severity: int = 2) -> Callable[[], object]:
    """The degradation itself, without the PSNR/SSIM measurement ``degrade`` adds."""
    from synthesis.degradation.levels import LEVELS
    from synthesis.degradation.ops import Draws
    from synthesis.degradation.registry import DEFAULT_CACHE, REGISTRY, Context

    batch = torch.from_numpy(images)[:, None]
    ctx = Context("MR", None, torch.device("cpu"), DEFAULT_CACHE)
    seeds = list(range(len(images)))
    return lambda: REGISTRY[kind].fn(batch, LEVELS[kind][severity], Draws(seeds, ctx.device), ctx)


def bench_mr(batch: int, repeats: int) -> None:
    import torchio as tio
    from monai.transforms import GibbsNoise, RandRicianNoise

    from synthesis.degradation import degrade
    from tests.synthesis.degradation_images import mr_images

    images = np.stack([mr_images(256)[i % 2] for i in range(batch)])
    pairs = {
        "ghosting": (tio.RandomGhosting(num_ghosts=(3, 3), axes=(1,), intensity=(0.5, 0.5)), "torchio"),
        "motion": (tio.RandomMotion(degrees=3.0, translation=8.0, num_transforms=2), "torchio"),
        "bias_field": (tio.RandomBiasField(coefficients=0.35, order=3), "torchio"),
    }
    for kind, (transform, lib) in pairs.items():
        full = timed(lambda kind=kind: degrade(images, modality="MR", kind=kind, severity=2, seed=0, device="cpu"), repeats)

        def run_tio(transform=transform) -> None:
            for img in images:
                transform(tio.ScalarImage(tensor=torch.from_numpy(img)[None, :, :, None]))

        ours, base = compare(kernel_only(kind, images), run_tio, 3 * repeats)
        print(f"MR {kind} 256x256 x{batch}: ours {ours * 1000:.1f} ms (with PSNR/SSIM {full * 1000:.0f} ms), {lib} {base * 1000:.1f} ms, ratio {base / ours:.1f}x (goal >= 3x)")
    monai_pairs = {"gibbs": GibbsNoise(alpha=0.6), "rician_noise": RandRicianNoise(prob=1.0, std=0.05, relative=False)}
    for kind, transform in monai_pairs.items():
        full = timed(lambda kind=kind: degrade(images, modality="MR", kind=kind, severity=2, seed=0, device="cpu"), repeats)

        def run_monai(transform=transform) -> None:
            for img in images:
                transform(torch.from_numpy(img)[None])

        ours, base = compare(kernel_only(kind, images), run_monai, 3 * repeats)
        print(f"MR {kind} 256x256 x{batch}: ours {ours * 1000:.1f} ms (with PSNR/SSIM {full * 1000:.0f} ms), monai {base * 1000:.1f} ms, ratio {base / ours:.1f}x (goal >= 3x)")


def bench_gpu(batch: int, repeats: int) -> None:
    if not torch.cuda.is_available():
        print("GPU slices/s: no GPU")
        return
    from synthesis.degradation import degrade

    slices, spacing = ct_slices(batch)
    degrade(slices, modality="CT", kind="low_dose", severity=2, seed=0, spacing_mm=spacing, device="cuda")
    torch.cuda.synchronize()
    seconds = timed(lambda: (degrade(slices, modality="CT", kind="low_dose", severity=2, seed=0, spacing_mm=spacing, device="cuda"), torch.cuda.synchronize()), repeats)
    print(f"GPU CT low dose 512x512/720 views: {batch / seconds:.1f} slices/s on {torch.cuda.get_device_name()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_mr(args.batch, args.repeats)
    bench_ct(args.batch, args.repeats)
    bench_gpu(args.batch, args.repeats)


if __name__ == "__main__":
    main()
