"""The randomness figures of Qiu et al. (2021) for QuantizeDistort on scikit-image photos.

- Section 5.3: share of pixels dropped and of pixel coordinates moved by one distortion (paper, ImageNet,
  delta = 0.15: "around 20%-30%" dropped, "more than 90%" moved).
- Table 1: randomness of the defence: purify one image 100 times, take 2 outputs at random, report the normalized L2
  distance (root-mean-square over pixels, images in [0, 1], as the paper's Metrics paragraph defines it) and SSIM
  between them, averaged over images (paper: L2 0.22, SSIM 0.30 for their method on 1,000 ImageNet images).

    python -m reproductions.qiu_statistics [--size 224] [--trials 100]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.metrics import structural_similarity

from art_purifiers import QuantizeDistort
from art_purifiers.demo import DEMO_PHOTOS, load_photos
from art_purifiers.ops import distortion_statistics, sample_grid_distortion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--trials", type=int, default=100, help="purifications per image (paper: 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    print(f"Distortion statistics, {args.size}x{args.size}, 10 cells per axis, 1,000 draws (mean ± std):")
    for delta in (0.15, 0.25):
        stats = distortion_statistics(sample_grid_distortion(1000, args.size, args.size, delta, generator))
        dropped, moved = stats["dropped"], stats["moved"]
        print(
            f"  delta={delta}: dropped {100 * dropped.mean():.1f}% ± {100 * dropped.std():.1f}, "
            f"moved {100 * moved.mean():.1f}% ± {100 * moved.std():.1f}"
        )
    photos = load_photos(args.size).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    print(
        f"Table 1 randomness ({len(DEMO_PHOTOS)} photos: {', '.join(DEMO_PHOTOS)}; {args.trials} purifications each):"
    )
    for label, defence in (
        ("QuantizeDistort (default)", QuantizeDistort(seed=args.seed)),
        ("QuantizeDistort distortion only", QuantizeDistort(seed=args.seed, quantize=False)),
        ("QuantizeDistort quantization only", QuantizeDistort(seed=args.seed, distort=False)),
    ):
        l2s, ssims = [], []
        for photo in photos:
            outputs = defence(np.repeat(photo[None], args.trials, axis=0))[0]
            i, j = rng.choice(args.trials, 2, replace=False)
            l2s.append(float(np.sqrt(np.mean((outputs[i] - outputs[j]) ** 2))))
            ssims.append(float(structural_similarity(outputs[i], outputs[j], channel_axis=0, data_range=1.0)))
        print(f"  {label}: L2 (RMS) {np.mean(l2s):.3f}, SSIM {np.mean(ssims):.3f}")


if __name__ == "__main__":
    main()
