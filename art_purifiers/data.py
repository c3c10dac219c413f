"""
Datasets for training and evaluation, as uint8 NCHW tensors held in memory.

* :func:`load_image_folder` reads any torchvision ``ImageFolder`` layout (``root/<class>/<image>``), e.g. an
  ImageNet validation folder, decoding with PIL on a few threads and caching the decoded tensor.
* :func:`load_cifar10` finds CIFAR-10 from an explicit directory, the ``ART_PURIFIERS_DATA`` environment
  variable, or torchvision's loader (``download=True`` for users with internet access). A directory may hold
  either the ImageFolder layout (``train/<class>/...``, ``test/<class>/...``) or torchvision's
  ``cifar-10-batches-py``.

An ImageFolder tree whose images are stored as JPEG files (a CIFAR-10 copy re-encoded as JPEG, say) has already been
through a lossy codec: :func:`jpeg_note` reads the quality from the files' quantization tables, and the dataset's
``note`` says so, for every figure measured on it to repeat. Other files and torchvision's CIFAR-10 carry no note.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Environment variable naming the data directory when no ``data_dir`` is given.
DATA_ENV = "ART_PURIFIERS_DATA"
#: Environment variable naming the cache directory of decoded datasets (default ``~/.cache/art-purifiers``).
CACHE_ENV = "ART_PURIFIERS_CACHE"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageDataset:
    """
    A decoded dataset.

    :param images: uint8 tensor (N, C, H, W).
    :param labels: int64 tensor (N,).
    :param classes: Class names in label order.
    :param source: Where the images came from (for reports).
    :param note: What a reader of figures measured on these images must know (e.g. that they were stored as JPEG).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str
    note: str = ""

    def __len__(self) -> int:
        return int(self.labels.numel())

    def as_float(self, indices: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """The images (all, or ``indices``) as a float32 NCHW NumPy array in [0, 1]."""
        images = self.images if indices is None else self.images[torch.as_tensor(indices, dtype=torch.long)]
        return images.float().div_(255).numpy()


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "art-purifiers"))


def _list_image_folder(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    classes = tuple(sorted(entry.name for entry in root.iterdir() if entry.is_dir()))
    if not classes:
        raise ValueError(f"{root} holds no class folders; expected an ImageFolder layout root/<class>/<image>.")
    files = [
        (file, label)
        for label, name in enumerate(classes)
        for file in sorted((root / name).iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise ValueError(f"{root} has class folders {list(classes)[:5]}... but no image files in them.")
    return files, classes


def _decode(file: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as opened:
        image = opened.convert("RGB")
    if size is not None and image.size != (size, size):
        # Resize the short side, then centre-crop: the usual evaluation transform.
        scale = size / min(image.size)
        resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def load_image_folder(
    root: str | Path, size: int | None = None, cache: bool = True, workers: int | None = None
) -> ImageDataset:
    """
    Decode an ImageFolder directory into memory.

    :param root: Directory with one sub-directory per class, sorted names giving the label order.
    :param size: Resize (short side) and centre-crop every image to ``size`` x ``size``; ``None`` keeps the size,
        which must then be the same for all images.
    :param cache: Keep the decoded tensor in the cache directory (``ART_PURIFIERS_CACHE``), keyed by the file list,
        sizes and modification times, so a second load takes a fraction of a second.
    :param workers: Decoding threads (default: the CPU count).
    :raises FileNotFoundError: if ``root`` does not exist.
    :raises ValueError: if it is not an ImageFolder layout or image sizes differ with ``size=None``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist.")
    files, classes = _list_image_folder(root)
    key = hashlib.sha256(repr((str(root.resolve()), size, len(files))).encode())
    for file, _ in files[:: max(1, len(files) // 64)]:
        stat = file.stat()
        key.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache_file = _cache_dir() / f"imagefolder-{key.hexdigest()[:24]}.pt"
    if cache and cache_file.is_file():
        # memory-mapped: the processes of a torchrun launch share one copy in the page cache, and each reads only the
        # images it uses
        payload = torch.load(cache_file, weights_only=True, mmap=True)
        return ImageDataset(payload["images"], payload["labels"], classes, str(root), jpeg_note(files))

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        arrays = list(pool.map(lambda item: _decode(item[0], size), files))
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(f"Images in {root} have different sizes {sorted(shapes)[:3]}...; pass size= to resize them.")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    if cache:
        _write_cache(cache_file, {"images": images, "labels": labels})
    return ImageDataset(images, labels, classes, str(root), jpeg_note(files))


#: Files :func:`jpeg_note` opens (spread over the folder): headers only, a few milliseconds.
_NOTE_SAMPLE = 32


def jpeg_note(files: list[tuple[Path, int]]) -> str:
    """
    The data note of an image folder stored as JPEG: the quality that Pillow's (libjpeg's standard) tables give at
    that quality, read off a sample of the files' quantization tables; an empty string when the files are not JPEG.
    """
    from PIL import Image

    qualities, others = set(), 0
    sample = [file for file, _ in files[:: max(1, len(files) // _NOTE_SAMPLE)]]
    for file in sample:
        with Image.open(file) as image:
            if image.format == "JPEG":
                qualities.add(_standard_quality(_quantization(image)))
            else:
                others += 1
    if not qualities:
        return ""
    if qualities == {None}:
        described = "with quantization tables of no standard quality"
    elif len(qualities) == 1:
        described = f"at quality {qualities.pop()} (standard tables)"
    else:
        described = "at several qualities (" + ", ".join(str(q) if q else "non-standard" for q in sorted(
            qualities, key=lambda q: q or 0)) + ")"  # fmt: skip
    which = "These images are" if not others else f"{len(sample) - others} of {len(sample)} sampled images are"
    return (
        f"{which} stored as JPEG files {described}: they have been through a lossy codec already, and JPEG at the "
        "same quality is nearly the identity on them and snaps small perturbations back onto its lattice, so rows of "
        "a JPEG defence at that quality overstate robustness."
    )


def _quantization(image: Any) -> tuple[tuple[int, ...], ...]:
    """A JPEG image's quantization tables, in Pillow's order (luma first)."""
    return tuple(tuple(table) for table in image.quantization.values())


def _standard_quality(tables: tuple[tuple[int, ...], ...]) -> int | None:
    """The quality 1-100 whose standard tables (as Pillow writes them) are ``tables``, or ``None``."""
    for quality, standard in _standard_tables().items():
        if tables and standard[: len(tables)] == tables:  # a grey image holds the luma table alone
            return quality
    return None


@functools.cache
def _standard_tables() -> dict[int, tuple[tuple[int, ...], ...]]:
    """Pillow's quantization tables at every quality (luma and chroma), read back from a tiny encoded image."""
    import io

    from PIL import Image

    tables = {}
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as image:
            tables[quality] = _quantization(image)
    return tables


def _write_cache(cache_file: Path, payload: dict[str, torch.Tensor]) -> None:
    """Write atomically through a temporary file of this writer's own, so parallel runs can share the cache."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.stem + ".", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        torch.save(payload, temporary)
        temporary.replace(cache_file)
    finally:
        temporary.unlink(missing_ok=True)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The explicit ``data_dir``, else ``$ART_PURIFIERS_DATA``, else ``None``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV)
    return Path(from_env).expanduser() if from_env else None


def load_cifar10(data_dir: str | Path | None = None, split: str = "test", download: bool = False) -> ImageDataset:
    """
    CIFAR-10 as uint8 tensors, classes in the order airplane, automobile, ..., truck.

    :param data_dir: A directory with ``train``/``test`` ImageFolder sub-directories, or torchvision's
        ``cifar-10-batches-py`` (or its parent). Default: ``$ART_PURIFIERS_DATA``.
    :param split: ``"train"`` or ``"test"``.
    :param download: Let torchvision download the original dataset into ``data_dir`` (or the cache directory)
        when it is not there. Needs internet access.
    :raises ValueError: for an unknown split or a directory that holds neither layout.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    directory = resolve_data_dir(data_dir)
    if directory is not None and (directory / split).is_dir():
        dataset = load_image_folder(directory / split)
        if dataset.classes != CIFAR10_CLASSES:
            raise ValueError(
                f"{directory / split} has classes {dataset.classes}, expected CIFAR-10's {CIFAR10_CLASSES}."
            )
        if tuple(dataset.images.shape[1:]) != (3, 32, 32):
            raise ValueError(f"{directory / split} holds {tuple(dataset.images.shape[1:])} images, not 3x32x32.")
        return dataset
    root = directory.parent if directory is not None and directory.name == "cifar-10-batches-py" else directory
    if root is not None and (root / "cifar-10-batches-py").is_dir() or download:
        from torchvision.datasets import CIFAR10

        root = root if root is not None else _cache_dir() / "torchvision"
        original = CIFAR10(str(root), train=split == "train", download=download)
        images = torch.from_numpy(np.asarray(original.data)).permute(0, 3, 1, 2).contiguous()
        return ImageDataset(images, torch.tensor(original.targets), CIFAR10_CLASSES, f"torchvision CIFAR10 {root}")
    if directory is None:
        raise ValueError(
            f"No CIFAR-10 data given: pass data_dir (--data-dir), set ${DATA_ENV}, or use download=True (--download)."
        )
    raise ValueError(
        f"{directory} holds neither an ImageFolder layout ({directory / split}/<class>/...) nor torchvision's "
        "cifar-10-batches-py; use download=True (--download) to fetch the original."
    )
