"""The networks by name: how to build each, and the model card that describes it.

The card carries everything scoring needs (heads and labels, input size, channels,
preprocessing), so scoring never hard-codes a network. Each network is registered with
`register_architecture` beside its builder (the ResNets here, see `_resnet`); Keras is
imported only by `build`, so the registry and cards are read without TensorFlow (edge install).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from marco_svc.labels import MARCO4, MERCK10, labels_of
from marco_svc.nets import preprocessing
from marco_svc.nets.card import ModelCard

if TYPE_CHECKING:
    import keras

Builder = Callable[["Architecture"], "keras.Model"]


@dataclass(frozen=True)
class Architecture:
    name: str
    heads: tuple[str, ...]
    preprocessing: dict[str, Any]
    description: str
    builder: Builder = field(repr=False, compare=False)

    @property
    def input_size(self) -> int:
        return self.preprocessing["size"]

    def build(self) -> keras.Model:
        """A fresh network (random weights) whose outputs include {scheme: probabilities}."""
        return self.builder(self)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(
    name: str, *, heads: Sequence[str], preprocessing: str, input_size: int, description: str
) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(architecture) -> keras.Model` as the network `name`."""

    def register(builder: Builder) -> Builder:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        spec = {"name": preprocessing, "size": input_size}
        ARCHITECTURES[name] = Architecture(name, tuple(heads), spec, description, builder)
        return builder

    return register


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"unknown architecture {name!r} (known: {known})") from None


def new_card(arch_name: str, name: str, version: str, **fields: Any) -> ModelCard:
    """A model card for a network of this architecture (artifacts are added later)."""
    arch = architecture(arch_name)
    prep = preprocessing.from_spec(arch.preprocessing)
    return ModelCard(
        name=name,
        version=version,
        architecture=arch.name,
        heads={scheme: list(labels_of(scheme)) for scheme in arch.heads},
        input_size=prep.input_size,
        channels=prep.channels,
        preprocessing=prep.spec(),
        **fields,
    )


def _resnet(depth: int) -> Builder:
    """`build_resnet(depth, ...)`, its module imported on build: resnet_cifar imports Keras at
    import time (its importers rely on that to register its custom layer and loss)."""

    def build(arch: Architecture) -> keras.Model:
        from marco_svc.nets.resnet_cifar import build_resnet

        return build_resnet(depth, arch.heads, input_size=arch.input_size)

    return build


for _depth in (56, 32):
    register_architecture(
        f"resnet-{_depth}",
        heads=(MERCK10,),
        preprocessing="merck_gray",
        input_size=128,
        description=f"ResNet-{_depth} (Ghafurian et al.), ten-way",
    )(_resnet(_depth))
    register_architecture(
        f"resnet-{_depth}-two-head",
        heads=(MARCO4, MERCK10),
        preprocessing="merck_gray",
        input_size=128,
        description=f"ResNet-{_depth} trunk with a four-way and a ten-way head",
    )(_resnet(_depth))

# These modules register beside their builders and import Keras only when they build.
from marco_svc.nets import compact, lite0, marco_inception  # noqa: E402, F401
