import pytest

torch = pytest.importorskip("torch")

from gwa.runner.models import build_model, classifier_head
from gwa.torch import find_head


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize(
    ("input_shape", "batch"), [((8, 8, 1), (3, 1, 8, 8)), ((40,), (3, 40)), ((12, 12, 3), (3, 3, 12, 12))]
)
def test_models_map_inputs_to_logits_with_a_linear_head(name, input_shape, batch):
    torch.manual_seed(0)
    model = build_model(name, input_shape=input_shape, num_classes=7, hidden=(16,), width=4)
    assert model(torch.randn(*batch)).shape == (3, 7)
    head = classifier_head(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 7
    assert find_head(model)[1] is head  # the tracker's own discovery agrees


def test_timm_model_gets_channels_and_classes_and_its_classifier_is_the_head():
    pytest.importorskip("timm")
    model = build_model("timm:test_convnext", input_shape=(32, 32, 1), num_classes=5)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert classifier_head(model) is model.get_classifier()


def test_timm_errors_are_clear():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="timm models take images"):
        build_model("timm:test_convnext", input_shape=(40,), num_classes=5)
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        build_model("timm:no_such_net", input_shape=(32, 32, 3), num_classes=5)
    with pytest.raises(ValueError, match="Expected `model` to be one of mlp, cnn, resnet or timm:<name>"):
        build_model("vgg", input_shape=(32, 32, 3), num_classes=5)


def test_timm_pretrained_reads_only_the_local_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub

    hub_ids = []
    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda repo, filename, **kw: hub_ids.append(repo)
    )
    with pytest.raises(FileNotFoundError, match="not in the local cache and downloads are off"):
        build_model("timm:test_convnext", input_shape=(32, 32, 3), num_classes=5, pretrained=True)
    assert hub_ids and all(h == hub_ids[0] for h in hub_ids)
    # A cached file is loaded (classifier re-initialised for 5 classes): its stem weights come through.
    torch.manual_seed(1)
    source = timm.create_model("test_convnext", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        lambda repo, filename, **kw: (
            str(tmp_path / "pytorch_model.bin") if filename == "pytorch_model.bin" else None
        ),
    )
    model = build_model("timm:test_convnext", input_shape=(32, 32, 3), num_classes=5, pretrained=True)
    assert torch.equal(model.stem[0].weight, source.stem[0].weight)
    assert model.get_classifier().out_features == 5
