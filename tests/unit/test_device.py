"""The one device resolver every job and server reads its `device` setting through."""

from __future__ import annotations

import pytest
import torch

from models.device import resolve_device


def test_auto_is_cuda_exactly_when_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == resolve_device("auto")


def test_named_devices_pass_through_as_torch_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    device = torch.device("cpu")
    assert resolve_device(device) is device
    # str() of the result is what the string-taking loaders get.
    assert str(resolve_device("cpu")) == "cpu"


def test_a_name_torch_does_not_know_is_an_error():
    with pytest.raises(RuntimeError):
        resolve_device("gpu")
