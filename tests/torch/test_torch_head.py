"""Head discovery on plain, timm and Hugging Face models."""

import pytest

import torch
from gwa.torch import find_head
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_mlp_last_linear():
    model = mlp()
    name, head = find_head(model)
    assert name == "2" and head is model[2]


def test_head_override_by_module_and_name():
    model = mlp()
    assert find_head(model, model[0]) == ("0", model[0])
    assert find_head(model, "0") == ("0", model[0])


def test_data_parallel_wrapper_is_looked_through():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    name, head = find_head(nn.DataParallel(model))
    assert name == "fc" and head is model.fc


def test_timm_get_classifier():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=7)
    name, head = find_head(model)
    assert head is model.get_classifier() and name == "fc" and head.out_features == 7


def test_timm_vit_head():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=1)
    name, head = find_head(model)
    assert name == "head" and head.out_features == 5
    # the last Linear registered is not always the head: the classifier is preferred
    assert head is model.get_classifier()


def tiny_hf(config_cls_name, **extra):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, config_cls_name)(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=4,
        **extra,
    )
    return transformers.AutoModelForSequenceClassification.from_config(config)


def test_hf_bert_classifier():
    model = tiny_hf("BertConfig")
    name, head = find_head(model)
    assert name == "classifier" and head is model.classifier


def test_hf_roberta_out_proj():
    model = tiny_hf("RobertaConfig")
    name, head = find_head(model)
    assert name == "classifier.out_proj" and head is model.classifier.out_proj


def test_hf_llama_style_score():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        num_labels=3,
        pad_token_id=0,
    )
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    name, head = find_head(model)
    assert name == "score" and head is model.score


def test_no_linear_lists_none():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(ValueError, match=r"no nn.Linear layer.*Pass `head=`.*name \(C, D\)\): none"):
        find_head(model)


def test_override_not_linear_lists_candidates():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(
        TypeError, match=r"Expected `head` to be an nn.Linear.*got ReLU at '1'.*0 \(8, 4\), 2 \(3, 8\)"
    ):
        find_head(model, model[1])
    with pytest.raises(ValueError, match=r"Expected `head` to name a submodule of the model; got 'fc'"):
        find_head(model, "fc")
    with pytest.raises(TypeError, match=r"Expected `head` to be an nn.Linear or its name"):
        find_head(model, 3)
    with pytest.raises(TypeError, match=r"Expected `model` to be a torch.nn.Module; got Tensor"):
        find_head(torch.zeros(2))
