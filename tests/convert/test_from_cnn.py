"""dinet.convert.from_cnn: converted CNNs equal the CNN on its grid and run on any points."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dinet.points as P
from dinet.convert import ConvertedCNN, Interpolate, from_cnn
from dinet.nn import DIConv

TOL = 1e-5  # max abs error relative to max |output|, as the issue asks


pytestmark = pytest.mark.usefixtures("one_thread")


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                module.weight.copy_(torch.rand(c, generator=g) + 0.5)
                module.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def _on_grid(net: ConvertedCNN, images: torch.Tensor):
    """The converted net on the grid of the images' shape, and that grid."""
    grid = P.grid(tuple(images.shape[2:]))
    return net(P.image_to_values(images, grid), grid), grid


# --- models -----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18's shape (stem, 4 stages of 2 BasicBlocks, pool, fc) at small widths."""

    def __init__(self, widths=(8, 16, 32, 64), in_channels: int = 3, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w, 1)))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class UNet(nn.Module):
    """Three levels: 2×2 max-pool down, upsampling up (nearest or bilinear), skips by cat."""

    def __init__(self, c_in: int = 3, classes: int = 4, width: int = 8,
                 mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        self.enc1 = _double_conv(c_in, width)
        self.enc2 = _double_conv(width, 2 * width)
        self.mid = _double_conv(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        self.up = nn.Upsample(scale_factor=2, mode=mode, **kwargs)
        self.dec2 = _double_conv(6 * width, 2 * width)
        self.dec1 = _double_conv(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(m), e2], dim=1))
        up = F.interpolate(d2, scale_factor=2, mode=self.mode,
                           **({"align_corners": False} if self.mode == "bilinear" else {}))
        d1 = self.dec1(torch.cat([up, e1], dim=1))
        return self.head(d1)


class StridedUNet(nn.Module):
    """Down by stride-2 convolutions (the grid's prefix levels), up by F.interpolate."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.enc = nn.Conv2d(2, 6, 3, padding=1)
        self.down1 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(6 + 8 + 8, 3, 1)

    def forward(self, x):
        e = F.gelu(self.enc(x))
        d1 = torch.relu(self.down1(e))
        d2 = self.down2(d1).relu()
        u2 = F.interpolate(d2, scale_factor=4, mode=self.mode)
        u1 = F.interpolate(d1, scale_factor=2, mode=self.mode)
        return self.head(torch.cat((e, u1, u2), 1))


class CNN3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(2, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(),
            nn.Conv3d(6, 8, 3, stride=2, padding=1), nn.BatchNorm3d(8), nn.SiLU(),
            nn.MaxPool3d(2), nn.Conv3d(8, 8, 1), nn.GELU(),
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


# --- exactness on the grid --------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_resnet18_shaped_matches_cnn_on_grid(size):
    torch.manual_seed(0)
    cnn = _randomize(ResNet18())
    net = from_cnn(cnn, (size, size))
    images = torch.randn(2, 3, size, size)
    out, grid = _on_grid(net, images)
    expected = cnn(images)
    assert out.shape == expected.shape == (2, 10)
    assert _rel_err(out, expected) <= TOL
    # centred strided windows land on the grid's coarser prefixes: the DIConv(stride=...)
    # convention that the converted net follows on every other point set
    sets = net.point_sets(grid)
    assert all(p == grid.coarsen(net.levels[name]) for name, p in sets.items())
    assert sets["layer4_1_relu_1"].shape == (size // 32,) * 2  # 5 stride-2 steps


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_unet_matches_cnn_on_grid(mode):
    torch.manual_seed(1)
    cnn = _randomize(UNet(mode=mode))
    net = from_cnn(cnn, (24, 32))
    images = torch.randn(2, 3, 24, 32)
    out, grid = _on_grid(net, images)
    assert net.output_points(grid) == grid
    dense = P.values_to_image(out, grid)
    expected = cnn(images)
    assert dense.shape == expected.shape == (2, 4, 24, 32)
    assert _rel_err(dense, expected) <= TOL
    interpolations = [m for m in net.modules() if isinstance(m, Interpolate)]
    assert len(interpolations) == 2


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsampling_from_prefix_levels_matches_cnn(mode):
    torch.manual_seed(2)
    cnn = StridedUNet(mode).eval()
    net = from_cnn(cnn, (16, 16))
    images = torch.randn(3, 2, 16, 16)
    out, grid = _on_grid(net, images)
    assert _rel_err(P.values_to_image(out, grid), cnn(images)) <= TOL


def test_upsampling_pixel_centre_grids_is_geometric():
    """On pixel-centre grids torch's 2× upsampling is geometric interpolation between the two
    point sets: nearest is exactly the nearest coarse point, and bilinear (align_corners=False)
    reproduces a linear field away from the border, as the geometric (off-lattice) path of
    Interpolate does everywhere."""
    from dinet.nn import Resample

    coarse, fine = P.grid((8, 12)), P.grid((16, 24))
    image = torch.randn(2, 3, 8, 12)
    values = P.image_to_values(image, coarse)
    nearest = Resample("nearest")(values, coarse, fine)
    expected = F.interpolate(image, scale_factor=2, mode="nearest")
    assert _rel_err(P.values_to_image(nearest, fine), expected) <= TOL

    layer = Interpolate("bilinear", spacing=(2 / 8, 2 / 12), scale_factor=2,
                        align_corners=False)
    expected = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    on_lattice = layer(values, coarse, fine)  # the lattice path: torch's own interpolation
    assert _rel_err(P.values_to_image(on_lattice, fine), expected) <= TOL

    def linear(coords):
        return (0.3 + coords @ torch.tensor([[1.5], [-0.7]])).unsqueeze(0)

    # the same points without a grid shape take the geometric path
    coarse_pts = P.from_coords(coarse.coords, "uniform")
    fine_pts = P.from_coords(fine.coords, "uniform")
    geometric = layer(linear(coarse_pts.coords), coarse_pts, fine_pts)
    lattice = layer(linear(coarse.coords), coarse, fine)
    interior = (fine.coords.abs() < 1 - 2 / 12).all(dim=1)
    truth = linear(fine.coords)
    assert _rel_err(geometric, truth) <= 1e-4  # moving least squares reproduces linear fields
    assert _rel_err(lattice[:, interior], truth[:, interior]) <= TOL


def test_3d_cnn_matches_on_grid():
    torch.manual_seed(3)
    cnn = _randomize(CNN3d())
    net = from_cnn(cnn, (8, 12, 8))
    volumes = torch.randn(2, 2, 8, 12, 8)
    out, _ = _on_grid(net, volumes)
    expected = cnn(volumes)
    assert out.shape == expected.shape == (2, 5)
    assert _rel_err(out, expected) <= TOL


def test_functional_style_and_pooled_gates():
    """F.* functions, tensor methods, view(B, -1), a squeeze-and-excitation gate, scalars."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.se1 = nn.Conv2d(8, 4, 1)
            self.se2 = nn.Conv2d(4, 8, 1)
            self.act = nn.PReLU(8)
            self.fc = nn.Linear(8, 3)
            self.bn = nn.BatchNorm1d(8)

        def forward(self, x):
            x = F.relu(self.conv(x * 2.0 - 1.0), inplace=True)
            x = F.avg_pool2d(x, 3, 2, 1)
            gate = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(x, 1)))))
            x = self.act(x * gate) + 0.5 * x
            x = F.max_pool2d(x, kernel_size=2)
            x = x.mean((2, 3), keepdim=True)
            x = self.bn(x.view(x.size(0), -1))
            return F.softmax(self.fc(x), dim=1)

    torch.manual_seed(4)
    cnn = _randomize(Net())
    net = from_cnn(cnn, (20, 20))
    images = torch.randn(4, 3, 20, 20)
    out, _ = _on_grid(net, images)
    assert _rel_err(out, cnn(images)) <= TOL


def test_more_layers_match_on_grid():
    """Max-global pools, size= upsampling, average pools with padding, channel dropout and
    softmax, dilated and grouped convolutions, vector concatenation."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 8, 3, padding=2, dilation=2)
            self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
            self.pool = nn.AvgPool2d(3, stride=2, padding=1)
            self.up = nn.Upsample(size=(10, 14), mode="bilinear", align_corners=True)
            self.drop = nn.Dropout2d(0.3)
            self.gmax = nn.AdaptiveMaxPool2d(1)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            x = self.drop(F.leaky_relu(self.conv(x), 0.1))
            y = self.pool(self.grouped(x).contiguous())
            y = F.softmax(self.up(y), dim=1)
            a = torch.flatten(self.gmax(y), 1)
            b = torch.flatten(F.adaptive_max_pool2d(self.grouped(x), 1), 1)
            return self.fc(torch.cat([a, b], 1))

    torch.manual_seed(8)
    cnn = Net().eval()
    net = from_cnn(cnn, (19, 27))
    images = torch.randn(2, 2, 19, 27)
    out, _ = _on_grid(net, images)
    assert _rel_err(out, cnn(images)) <= TOL


def test_torchvision_resnet18():
    models = pytest.importorskip("torchvision.models",
                                 reason="torchvision is not installed (optional check)")
    torch.manual_seed(5)
    cnn = _randomize(models.resnet18(num_classes=7))
    net = from_cnn(cnn, (64, 64))
    images = torch.randn(1, 3, 64, 64)
    out, _ = _on_grid(net, images)
    assert _rel_err(out, cnn(images)) <= TOL


# --- off the grid -----------------------------------------------------------------------
def test_runs_on_non_grid_points():
    torch.manual_seed(6)
    resnet = from_cnn(_randomize(ResNet18()), (32, 32))
    points = P.sobol(1024, 2, seed=0)
    out = resnet(torch.randn(2, len(points), 3), points)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    sets = resnet.point_sets(points)
    assert min(len(p) for p in sets.values()) == 1  # 32× coarser: ⌈1024 / 32²⌉ points
    assert all(p == points.coarsen(resnet.levels[name]) for name, p in sets.items())

    unet = from_cnn(_randomize(UNet()), (32, 32))
    out = unet(torch.randn(2, len(points), 3), points)
    assert out.shape == (2, len(points), 4) and torch.isfinite(out).all()
    assert unet.output_points(points) == points
    jittered = P.jittered_grid((32, 32), seed=0)
    out = unet(torch.randn(1, len(jittered), 3), jittered)
    assert out.shape == (1, len(jittered), 4) and torch.isfinite(out).all()

    # the converted net trains as a DI-Net: gradients reach the converted weights
    unet.train()
    unet(torch.randn(2, len(points), 3), points).square().mean().backward()
    grads = [p.grad for p in unet.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    cnn3d = from_cnn(_randomize(CNN3d()), (8, 8, 8))
    cloud = P.sobol(512, 3, seed=1)
    out = cnn3d(torch.randn(2, len(cloud), 2), cloud)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_discretization_invariance_of_a_smooth_field():
    """A smooth input gives nearly the same output on the grid and on Sobol points."""
    torch.manual_seed(7)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, 2, 1),
                        nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    net = from_cnn(cnn, (32, 32))

    def field(coords):
        return torch.sin(2 * coords[:, :1]) * torch.cos(3 * coords[:, 1:])

    grid, sobol = P.grid((32, 32)), P.sobol(4096, 2, seed=0)
    on_grid = net(field(grid.coords)[None], grid)
    on_sobol = net(field(sobol.coords)[None], sobol)
    assert _rel_err(on_sobol, on_grid) < 0.05


def test_other_grids_and_copies():
    cnn = _randomize(UNet(mode="nearest"))
    net = from_cnn(cnn, (16, 16))
    bigger = P.grid((32, 32))
    out = net(torch.randn(1, len(bigger), 3), bigger)
    assert out.shape == (1, len(bigger), 4) and torch.isfinite(out).all()
    points = P.sobol(256, 2, seed=3)
    x = torch.randn(1, 256, 3)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        torch.testing.assert_close(clone(x, points), net(x, points))
    state = net.state_dict()
    assert any(k.endswith("running_mean") for k in state)


def test_mode_and_input_checks():
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)).train()
    assert from_cnn(cnn, (8, 8)).training
    net = from_cnn(cnn.eval(), (8, 8))
    assert not net.training
    with pytest.raises(ValueError, match="spatial shape"):
        from_cnn(cnn, (1, 8, 8, 8))
    with pytest.raises(ValueError, match="is 3-D"):
        net(torch.randn(1, 64, 1), P.sobol(64, 3, seed=0))
    with pytest.raises(ValueError, match="points"):
        net(torch.randn(1, 10, 1), P.grid((8, 8)))


# --- what cannot be converted -----------------------------------------------------------
class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        x, _ = self.lstm(x)
        return self.fc(x)


def test_unsupported_layer_is_named():
    with pytest.raises(ValueError) as info:
        from_cnn(WithLSTM(), (16, 16))
    message = str(info.value)
    assert "lstm" in message and "nn.LSTM" in message
    assert "1 node(s)" in message  # the getitem and fc after it are not blamed
    assert "Supported:" in message and "nn.Conv" in message


def test_every_unsupported_node_is_listed():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
            self.lstm = nn.LSTM(8, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.up(self.conv(x))
            y, _ = self.lstm(torch.flatten(x, 2))
            return self.fc(x.flatten(1)) + y.sum()

    with pytest.raises(ValueError) as info:
        from_cnn(Two(), (16, 16))
    message = str(info.value)
    assert "up (call_module 'up': nn.ConvTranspose2d)" in message
    assert "lstm (call_module 'lstm': nn.LSTM)" in message
    assert "use nn.Upsample" in message


def test_grid_dependent_operations_are_refused():
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    with pytest.raises(ValueError, match="pool globally first"):
        from_cnn(Flat(), (8, 8))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Upsample(scale_factor=2))
    with pytest.raises(ValueError, match="not seen earlier"):
        from_cnn(cnn, (8, 8))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(4))
    with pytest.raises(ValueError, match="only output size 1"):
        from_cnn(cnn, (8, 8))
    with pytest.raises(ValueError, match="3-D convolution"):
        from_cnn(nn.Conv3d(1, 1, 3), (8, 8))


def test_cubic_conversion_is_exact_on_the_grid_and_uses_cubic_kernels():
    """from_cnn(kernel="cubic"): every converted convolution carries Keys' cubic, and on the
    CNN's own grid the network still equals the CNN."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).double().eval()
    net = from_cnn(cnn, (16, 16), kernel="cubic").double()
    convs = [m for m in net.modules() if isinstance(m, DIConv)]
    assert len(convs) == 2 and all(c.kernel == "cubic" for c in convs)
    grid = P.grid((16, 16))
    image = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net(P.image_to_values(image, grid), grid), cnn(image),
                               rtol=1e-12, atol=1e-12)
