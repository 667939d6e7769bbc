import json

import pytest

from gwa.runner.config import RunConfig


def test_defaults_are_valid_and_serialise_to_json():
    c = RunConfig()
    d = json.loads(json.dumps(c.to_dict()))
    assert (
        d["dataset"] == "digits" and d["name"] == "digits_mlp_seed0" and d["out"] == "runs/digits_mlp_seed0"
    )
    assert RunConfig.from_dict({**d, "unknown_key": 1}) == RunConfig(
        name="digits_mlp_seed0", out="runs/digits_mlp_seed0"
    )


def test_run_name_includes_noise_and_model():
    c = RunConfig(dataset="mnist1d", model="timm:resnet18", noise="symmetric", noise_rate=0.2, seed=3)
    assert c.run_name == "mnist1d_timm-resnet18_symmetric0.2_seed3"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"dataset": "mnist"},
            (
                r"Expected `dataset` to be one of digits, mnist1d, fashion-mnist, cifar10, imagefolder; "
                r"got 'mnist'"
            ),
        ),
        ({"model": "vgg"}, r"Expected `model` to be one of mlp, cnn, resnet or timm:<name>; got 'vgg'"),
        ({"model": "timm:"}, r"timm:<name>; got 'timm:'"),
        ({"optimizer": "rmsprop"}, r"Expected `optimizer` to be one of sgd, adam, adamw; got 'rmsprop'"),
        ({"schedule": "step"}, r"`schedule` to be one of constant, cosine, warmup_cosine"),
        ({"device": "tpu"}, r"`device` to be one of auto, cpu, cuda, mps"),
        ({"backend": "tf"}, r"`backend` to be one of torch, jax"),
        ({"signals": ("loss", "aum")}, r"`signals` to be one of .*got 'aum'"),
        ({"signals": ("loss", "loss")}, r"Expected distinct `signals`"),
        ({"epochs": 0}, r"Expected `epochs` to be an integer >= 1; got 0"),
        ({"batch_size": 2.5}, r"`batch_size` to be an integer >= 1; got 2.5"),
        ({"num_train": 1}, r"`num_train` to be an integer >= 2"),
        ({"lr": -1.0}, r"Expected `lr` to be a positive number; got -1.0"),
        ({"momentum": 1.0}, r"Expected `momentum` in \[0, 1\); got 1.0"),
        ({"val_frac": 0.6}, r"Expected `val_frac` in \[0, 0.5\); got 0.6"),
        ({"noise": "symmetric"}, r"Expected `noise_rate` > 0 with noise='symmetric'"),
        ({"noise_rate": 0.2}, r"`noise_rate` applies to symmetric/asymmetric noise only"),
        ({"noise": "file"}, r"Expected `noise_file` exactly when noise='file'"),
        ({"download": True}, r"`download` is supported for dataset 'cifar10'"),
        ({"dataset": "imagefolder"}, r"needs `data_dir` \(--data-dir\)"),
        ({"resume": True, "overwrite": True}, r"at most one of `resume` and `overwrite`"),
        ({"pretrained": True}, r"`pretrained` needs a timm:<name> model"),
        (
            {"schedule": "warmup_cosine", "warmup_epochs": 20, "epochs": 20},
            r"Expected `warmup_epochs` < epochs = 20",
        ),
        ({"eval_sets": {"c-blur": "blur.npy"}}, r"an .npz file with arrays x, y; got 'blur.npy'"),
        ({"eval_sets": {"a b": "x.npz"}}, r"eval-set names made of letters"),
        ({"early_stop": 0}, r"`early_stop` to be an integer >= 1; got 0"),
    ],
)
def test_validation_names_the_option_and_the_choices(changes, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**changes)


def test_download_allowed_for_timm_pretrained_weights():
    assert RunConfig(model="timm:resnet18", pretrained=True, download=True).download
