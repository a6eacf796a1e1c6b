"""The networks by name: how to build each, and the model card that describes it.

The card carries everything scoring needs (heads and labels, input size, channels,
preprocessing), so scoring never hard-codes a network. Keras is imported only by `build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marco_svc.labels import MARCO4, MERCK10, labels_of
from marco_svc.nets import preprocessing
from marco_svc.nets.card import ModelCard

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Architecture:
    name: str
    heads: tuple[str, ...]
    preprocessing: dict[str, Any]
    description: str

    def build(self) -> keras.Model:
        """A fresh network (random weights) whose outputs include {scheme: probabilities}."""
        if self.name == "marco-inception-v3":
            from marco_svc.nets.marco_inception import build_marco_inception

            return build_marco_inception()
        if self.name.startswith("compact-"):
            from marco_svc.nets.compact import build_compact

            evidence = self.name == "compact-evidence-two-head"
            size = self.preprocessing["size"]
            return build_compact(self.heads, input_size=size, crystal_evidence=evidence)
        from marco_svc.nets.resnet_cifar import build_resnet

        depth = int(self.name.split("-")[1])
        size = self.preprocessing["size"]
        return build_resnet(depth, self.heads, input_size=size)


_MERCK = {"name": "merck_gray", "size": 128}
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "marco-inception-v3",
            (MARCO4,),
            {"name": "marco", "size": 599},
            "MARCO's Inception-v3 (Bruno et al. 2018), the official graph variable for variable",
        ),
        Architecture("resnet-56", (MERCK10,), _MERCK, "ResNet-56 (Ghafurian et al.), ten-way"),
        Architecture("resnet-32", (MERCK10,), _MERCK, "ResNet-32 (Ghafurian et al.), ten-way"),
        Architecture(
            "resnet-56-two-head",
            (MARCO4, MERCK10),
            _MERCK,
            "ResNet-56 trunk with a four-way and a ten-way head",
        ),
        Architecture(
            "resnet-32-two-head",
            (MARCO4, MERCK10),
            _MERCK,
            "ResNet-32 trunk with a four-way and a ten-way head",
        ),
        Architecture(
            "compact-two-head",
            (MARCO4, MERCK10),
            {"name": "merck_gray", "size": 192},
            "a small CNN (marco_svc.nets.compact), four- and ten-way heads on pooled features",
        ),
        Architecture(
            "compact-evidence-two-head",
            (MARCO4, MERCK10),
            {"name": "merck_gray", "size": 192},
            "the default model's small CNN: compact-two-head whose four-way Crystals logit is "
            "the maximum of a stage-3 crystal-evidence map (marco_svc.nets.compact)",
        ),
    )
}


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
