"""Small PyTorch re-implementations used as parity references by the tests.

torchvision cannot be imported beside the CPU torch of this project (see
STACK.md), so the ResNet here reproduces torchvision 0.7's structure and
parameter names (v1.5 Bottleneck, ``replace_stride_with_dilation``
semantics). The decoder pieces reproduce the reference repository's
``DepthDecoder`` (ModuleList ``decoder.N`` indexing), ``ASPP``, ``ConvBlock``
and monodepth2's ``PoseDecoder``, written after the reference code.
Loaded by path from the tests (pytest runs in importlib mode).
"""

import torch
from torch import nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1, dilation=1):
  return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation,
                   bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None,
               dilation=1):
    super().__init__()
    self.conv1 = conv3x3(inplanes, planes, stride, dilation)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = conv3x3(planes, planes, 1, dilation)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None,
               dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = conv3x3(planes, planes, stride, dilation)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


class ResNet(nn.Module):
  """torchvision-style ResNet without avgpool/fc use (fc kept for keys)."""

  def __init__(self, block, layers, replace_stride_with_dilation=(False,) * 3,
               in_ch=3, width=64):
    super().__init__()
    self.inplanes = width
    self.dilation = 1
    self.conv1 = nn.Conv2d(in_ch, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, width, layers[0])
    self.layer2 = self._make_layer(block, width * 2, layers[1], 2,
                                   replace_stride_with_dilation[0])
    self.layer3 = self._make_layer(block, width * 4, layers[2], 2,
                                   replace_stride_with_dilation[1])
    self.layer4 = self._make_layer(block, width * 8, layers[3], 2,
                                   replace_stride_with_dilation[2])
    self.fc = nn.Linear(width * 8 * block.expansion, 10)

  def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
    downsample = None
    previous_dilation = self.dilation
    if dilate:
      self.dilation *= stride
      stride = 1
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                    bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample,
                    previous_dilation)]
    self.inplanes = planes * block.expansion
    for _ in range(1, blocks):
      layers.append(block(self.inplanes, planes, dilation=self.dilation))
    return nn.Sequential(*layers)

  def features(self, x):
    """monodepth2 ResnetEncoder.forward: normalise, return f0..f4."""
    x = (x - 0.45) / 0.225
    f0 = self.relu(self.bn1(self.conv1(x)))
    f1 = self.layer1(self.maxpool(f0))
    f2 = self.layer2(f1)
    f3 = self.layer3(f2)
    f4 = self.layer4(f3)
    return [f0, f1, f2, f3, f4]


class ConvBlock(nn.Module):

  def __init__(self, cin, cout, bn=False):
    super().__init__()
    self.block = nn.Sequential(Conv3x3(cin, cout),
                               nn.BatchNorm2d(cout) if bn else nn.Identity(),
                               nn.ELU(inplace=True), nn.Identity())

  def forward(self, x):
    return self.block(x)


class Conv3x3(nn.Module):

  def __init__(self, cin, cout):
    super().__init__()
    self.pad = nn.ReflectionPad2d(1)
    self.conv = nn.Conv2d(cin, cout, 3)

  def forward(self, x):
    return self.conv(self.pad(x))


class ASPPPooling(nn.Sequential):

  def __init__(self, cin, cout):
    super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1,
                                                        bias=False),
                     nn.BatchNorm2d(cout), nn.ReLU())

  def forward(self, x):
    size = x.shape[-2:]
    for mod in self:
      x = mod(x)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):

  def __init__(self, cin, rates, cout=256):
    super().__init__()
    mods = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                          nn.BatchNorm2d(cout), nn.ReLU())]
    for r in rates:
      mods.append(nn.Sequential(
          nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False),
          nn.BatchNorm2d(cout), nn.ReLU()))
    mods.append(ASPPPooling(cin, cout))
    self.convs = nn.ModuleList(mods)
    self.project = nn.Sequential(
        nn.Conv2d((2 + len(rates)) * cout, cout, 1, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(0.5))

  def forward(self, x):
    return self.project(torch.cat([c(x) for c in self.convs], 1))


class DepthDecoder(nn.Module):
  """Reference DepthDecoder (intermediate_aspp, use_skips, skip_proj=Id)."""

  def __init__(self, num_ch_enc, num_ch_dec, rates, bn, scales=(0, 1, 2, 3)):
    super().__init__()
    self.scales = scales
    self.convs = {}
    order = []
    for i in range(4, -1, -1):
      cin = num_ch_enc[-1] if i == 4 else num_ch_dec[i + 1]
      m = (ASPP(cin, rates, num_ch_dec[i]) if i == 4
           else ConvBlock(cin, num_ch_dec[i], bn))
      self.convs[("upconv", i, 0)] = m
      order.append(m)
      cin = num_ch_dec[i]
      if i > 0:
        cin += num_ch_enc[i - 1]
        order.append(nn.Identity())
      m = ConvBlock(cin, num_ch_dec[i], bn)
      self.convs[("upconv", i, 1)] = m
      order.append(m)
    for s in scales:
      m = Conv3x3(num_ch_dec[s], 1)
      self.convs[("dispconv", s)] = m
      order.append(m)
    self.decoder = nn.ModuleList(order)

  def forward(self, feats, x=None, stages=(4, 3, 2, 1, 0)):
    out = {}
    x = feats[-1] if x is None else x
    for i in stages:
      x = self.convs[("upconv", i, 0)](x)
      if i == 0 or x.shape[-1] < feats[i - 1].shape[-1]:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
      if i > 0:
        x = torch.cat([x, feats[i - 1]], 1)
      x = self.convs[("upconv", i, 1)](x)
      out[("upconv", i)] = x
      if i in self.scales:
        out[("disp", i)] = torch.sigmoid(self.convs[("dispconv", i)](x))
    return out


class PoseDecoder(nn.Module):

  def __init__(self, cin=512):
    super().__init__()
    self.net = nn.ModuleList([nn.Conv2d(cin, 256, 1),
                              nn.Conv2d(256, 256, 3, 1, 1),
                              nn.Conv2d(256, 256, 3, 1, 1),
                              nn.Conv2d(256, 12, 1)])

  def forward(self, f4):
    out = F.relu(self.net[0](f4))
    out = F.relu(self.net[1](out))
    out = F.relu(self.net[2](out))
    out = self.net[3](out).mean(3).mean(2)
    out = 0.01 * out.view(-1, 2, 1, 6)
    return out[:, 0, 0, :3], out[:, 0, 0, 3:]


def randomize_bn(module, generator):
  """Gives every BN non-trivial affine params and running stats."""
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      with torch.no_grad():
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=generator))
        m.bias.copy_(0.2 * torch.randn(c, generator=generator))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
        m.running_var.copy_(0.5 + torch.rand(c, generator=generator))


def state_dict_numpy(module, prefix=""):
  return {prefix + k: v.detach().numpy().copy()
          for k, v in module.state_dict().items()}
