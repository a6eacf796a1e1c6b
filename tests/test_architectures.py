"""The architecture registry: each registered network matches its model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from marco_svc.labels import MERCK10
from marco_svc.nets import lite0
from marco_svc.nets.architectures import (
    ARCHITECTURES,
    architecture,
    new_card,
    register_architecture,
)
from tests.helpers import ROOT

PARAMETERS = {"marco-inception-v3": 11_476_584, "lite0-two-head": 3_430_382}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_network_matches_its_card(name: str) -> None:
    if name.startswith("lite0") and not lite0.weights_available():
        pytest.skip(f"{lite0.WEIGHTS_REQUIREMENT} (extra marco-svc[trunk]) is not installed")
    card = new_card(name, "t", "1")
    model = architecture(name).build()
    assert model.input_shape == (None, *card.input_size, card.channels)
    outputs = model(np.zeros((1, *card.input_size, card.channels), np.float32))
    for scheme, labels in card.heads.items():
        assert model.output[scheme].shape == (None, len(labels))
        sums = keras.ops.convert_to_numpy(outputs[scheme]).sum(axis=-1)
        np.testing.assert_allclose(sums, [1.0], rtol=1e-5)
    if name in PARAMETERS:
        assert model.count_params() == PARAMETERS[name]


def test_a_name_is_registered_once_and_looked_up_strictly() -> None:
    register = register_architecture(
        "resnet-56", heads=(MERCK10,), preprocessing="merck_gray", input_size=64, description="x"
    )
    with pytest.raises(ValueError, match="'resnet-56' is already registered"):
        register(ARCHITECTURES["resnet-32"].builder)
    assert ARCHITECTURES["resnet-56"].input_size == 128
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet-20' \(known: .*resnet-56"):
        architecture("resnet-20")


def test_the_registry_and_cards_are_read_without_tensorflow() -> None:
    probe = (
        "import json, sys\n"
        "from marco_svc.nets.architectures import ARCHITECTURES, new_card\n"
        "cards = [new_card(name, 't', '1') for name in ARCHITECTURES]\n"
        "print(json.dumps([len(cards), 'tensorflow' in sys.modules, 'keras' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [len(ARCHITECTURES), False, False]
