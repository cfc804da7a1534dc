import pytest
import torch

from mrnet.model import ARCHITECTURES, ModelConfig
from mrnet.model import build_model as build
from mrnet.model.cnn import CNNBaseline
from mrnet.model.mrnet import AttentiveStatsPool, MRNet

ARCHS = ARCHITECTURES.names()


def build_model(arch: str, n_mels: int, n_classes: int, channels: int = 512) -> torch.nn.Module:
    return build(ModelConfig(arch, n_mels, n_classes, channels=channels))


N_MELS = 40
N_CLASSES = 8


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_mrnet(**kw) -> MRNet:
    return MRNet(ModelConfig("mrnet", N_MELS, N_CLASSES, channels=32, **kw))


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch,frames", [(2, 50), (3, 137), (4, 300)])
def test_output_shape_train(arch: str, batch: int, frames: int) -> None:
    model = build_model(arch, N_MELS, N_CLASSES, channels=32).train()
    out = model(torch.randn(batch, N_MELS, frames))
    assert out.shape == (batch, N_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("frames", [21, 128, 1000])
def test_output_shape_eval_batch_one(arch: str, frames: int) -> None:
    model = build_model(arch, N_MELS, N_CLASSES, channels=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, N_MELS, frames))
    assert out.shape == (1, N_CLASSES)


def test_cnn_handles_128_mels_without_resize() -> None:
    model = CNNBaseline(ModelConfig("cnn", 128, 5)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 128, 128)).shape == (2, 5)
        assert model(torch.randn(2, 128, 700)).shape == (2, 5)


def test_full_size_parameter_count() -> None:
    # documented in the MRNet docstring; equals the authors' MLFANet (+ CCE head)
    authors = dict(channels=512, input_norm="instance")
    assert n_params(MRNet(ModelConfig("mrnet", 128, 8, **authors))) == 19_112_607
    assert n_params(MRNet(ModelConfig("mrnet", 128, 16, **authors))) == 19_113_655
    assert n_params(build_model("mrnet", 128, 8)) == 19_112_607 + 2 * 128  # batch norm


def test_route_structure() -> None:
    model = small_mrnet()
    assert len(model.blocks) == 3
    assert [b.res2.convs[0][0].dilation[0] for b in model.blocks] == [2, 3, 4]
    assert model.blocks[0].merge[0].out_channels == 3 * 32
    assert model.route_weight.shape == (1, 7, 1)
    assert len(model.pools) == 7


def test_build_model_rejects_unknown_arch() -> None:
    from pipeline.errors import BadInput

    with pytest.raises(BadInput, match="unknown --arch 'resnet'; use one of mrnet, cnn"):
        build_model("resnet", N_MELS, N_CLASSES)
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig.from_dict({"arch": "resnet", "n_mels": 8, "n_classes": 2})


def test_bf16_autocast_forward_backward_finite() -> None:
    model = small_mrnet().train()
    x = torch.randn(4, N_MELS, 60) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), torch.arange(4) % N_CLASSES)
    loss.backward()
    assert torch.isfinite(out.float()).all()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_pooling_is_fp32_under_autocast() -> None:
    pool = AttentiveStatsPool(16).eval()
    x = torch.randn(2, 16, 30).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x)
    assert out.dtype == torch.float32


def test_pooling_constant_input_is_finite() -> None:
    pool = AttentiveStatsPool(16).train()
    x = torch.full((3, 16, 40), 7.5, requires_grad=True)
    out = pool(x)
    assert out.shape == (3, 32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :16], torch.full((3, 16), 7.5))
    torch.testing.assert_close(out[:, 16:], torch.full((3, 16), 1e-2))  # sqrt of the clamp
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_pooling_statistics_match_uniform_weights() -> None:
    pool = AttentiveStatsPool(8).eval()
    for p in pool.attention[-1].parameters():  # zero logits -> uniform attention
        torch.nn.init.zeros_(p)
    x = torch.randn(2, 8, 50) * 3 + 1
    out = pool(x)
    torch.testing.assert_close(out[:, :8], x.mean(2))
    torch.testing.assert_close(out[:, 8:], x.std(2, unbiased=False))


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_is_deterministic(arch: str) -> None:
    model = build_model(arch, N_MELS, N_CLASSES, channels=32)
    model.train()(torch.randn(4, N_MELS, 64))  # move BN running stats off their init
    model.eval()
    x = torch.randn(2, N_MELS, 90)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is live in training


def test_gradient_reaches_first_conv() -> None:
    model = small_mrnet().train()
    out = model(torch.randn(3, N_MELS, 50))
    # (not out.sum(): the final train-mode BatchNorm makes batch sums constant)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    grad = model.stem[0].weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0
