"""Reference for the segmentation task: a plain CNN U-Net on the raw scene pixels.

Not a dinet model — it shows what the scenes allow. Trains a four-level U-Net (32–256
channels, conv-BN-ReLU pairs, max-pool down, bilinear up, concatenated skips) on N scenes of
SIZE×SIZE pixels made exactly as `dinet fit --source scenes --size SIZE --seed 0` makes them
(items of SCALE_MIN–SCALE_MAX of the canvas, ITEMS_MIN–ITEMS_MAX per scene), and prints mIoU
/ pixel accuracy on TEST test scenes (seed 1, the test split) after every epoch and the
per-class IoU at the end. Usage:
`.venv/bin/python benchmarks/seg_pixel_unet.py [N=3000] [EPOCHS=15] [SIZE=32] [SCALE_MIN=0.3]
[SCALE_MAX=0.6] [ITEMS_MIN=2] [ITEMS_MAX=3] [TEST=500]`.
"""

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from dinet.data import load_fashion_mnist
from dinet.data.scenes import make_scenes
from dinet.tasks.metrics import confusion, mean_iou, pixel_accuracy


def block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class UNet(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), n_classes: int = 11) -> None:
        super().__init__()
        channels = (1, *widths)
        self.down = nn.ModuleList(nn.Sequential(*block(a, b), *block(b, b))
                                  for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.up = nn.ModuleList(nn.Sequential(*block(a + b, b), *block(b, b))
                                for a, b in zip(widths[::-1][:-1], widths[::-1][1:], strict=True))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x):
        skips = []
        for level, down in enumerate(self.down):
            x = down(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        for up, skip in zip(self.up, skips[::-1][1:], strict=True):
            x = F.interpolate(x, scale_factor=2, mode="bilinear")
            x = up(torch.cat([x, skip], 1))
        return self.head(x)


def main(n: int = 3000, epochs: int = 15, size: int = 32, scale_min: float = 0.3,
         scale_max: float = 0.6, items_min: int = 2, items_max: int = 3, n_test: int = 500,
         batch: int = 64, lr: float = 2e-3) -> None:
    torch.manual_seed(0)
    kw = dict(size=size, scale=(scale_min, scale_max), items=(items_min, items_max))
    train = make_scenes(n, 0, source=load_fashion_mnist("train"), **kw)
    test = make_scenes(n_test, 1, source=load_fashion_mnist("test"), **kw)
    images = torch.from_numpy(train.images).permute(0, 3, 1, 2)
    labels = torch.from_numpy(train.labels)
    test_images = torch.from_numpy(test.images).permute(0, 3, 1, 2)
    model = UNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr,
                                                   total_steps=epochs * -(-n // batch))
    start = time.time()
    for epoch in range(epochs):
        model.train()
        for i in torch.randperm(n).split(batch):
            x, y = images[i], labels[i]
            flip = torch.rand(len(i)) < 0.5  # left-right flips, as dinet train does
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = torch.where(flip[:, None, None], y.flip(2), y)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            conf = confusion(model(test_images).argmax(1), torch.from_numpy(test.labels), 11)
        print(f"n={n} size={size} epoch {epoch + 1}: mIoU {mean_iou(conf):.3f}, pixel accuracy "
              f"{pixel_accuracy(conf):.3f} ({time.time() - start:.0f} s)", flush=True)
    conf = conf.double()
    iou = conf.diagonal() / (conf.sum(0) + conf.sum(1) - conf.diagonal())
    print("per-class IoU (background, classes 0-9):", " ".join(f"{v:.2f}" for v in iou))


if __name__ == "__main__":
    kinds = (int, int, int, float, float, int, int, int)
    main(*(kind(a) for kind, a in zip(kinds, sys.argv[1:], strict=False)))
