"""`key=value` items with YAML values: one parser for --model-kwargs and compare's model specs."""

import pytest

from pedconv.compare import parse_spec
from pedconv.errors import UsageError
from pedconv.training.config import parse_model_kwargs
from pedconv.utils.kv import KeyValueError, parse_key_values


def test_values_are_yaml() -> None:
    assert parse_key_values(["rank=4", "components=[gamma, psi]", "variational=false", "sigma=learned", "lr=0.5",
                             "tag="]) == {"rank": 4, "components": ["gamma", "psi"], "variational": False,
                                          "sigma": "learned", "lr": 0.5, "tag": None}


@pytest.mark.parametrize("item, syntax", [("rank", True), ("=2", True), ("not-a-name=2", True), ("rank=[1", False)])
def test_bad_items(item: str, syntax: bool) -> None:
    with pytest.raises(KeyValueError) as e:
        parse_key_values(["width=8", item])
    assert e.value.item == item and e.value.syntax is syntax
    assert isinstance(e.value, UsageError) and isinstance(e.value, ValueError)


def test_both_callers_word_the_errors_as_before() -> None:
    with pytest.raises(ValueError, match=r"^--model-kwargs expects key=value, got 'rank'$"):
        parse_model_kwargs(["rank"])
    with pytest.raises(ValueError, match=r"^--model-kwargs 'rank=\[1': the value is not valid YAML"):
        parse_model_kwargs(["rank=[1"])
    with pytest.raises(UsageError, match=r"^model spec 'cifar_resnet20:rank': 'rank' is not key=value$"):
        parse_spec("cifar_resnet20:rank")
    assert parse_spec("cifar_resnet20:width=8").kwargs == parse_model_kwargs(["width=8"])
