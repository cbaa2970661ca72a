#pragma once
// Per-sample transforms: uint8 [C, H, W] in, normalised float [C, H', W'] out. Random transforms
// draw from the generator they are given (the loader seeds one per sample from the epoch seed,
// so augmentation is reproducible whatever the number of worker threads).
#include <functional>
#include <random>

#include <torch/types.h>

#include "rmnet/data/dataset.h"

namespace rmnet {

using Rng = std::mt19937_64;
using Transform = std::function<torch::Tensor(const torch::Tensor& image, Rng& rng)>;

/// To float in [0, 1], then (x - mean) / std per channel.
Transform normalize(Normalization norm);
/// CIFAR training: zero-pad by `padding`, random crop back to the input size, random
/// horizontal flip (p = 0.5), normalise.
Transform random_crop_flip(int64_t padding, Normalization norm, bool flip = true);
/// ImageNet training: RandomResizedCrop(size, scale [0.08, 1], ratio [3/4, 4/3]) + flip + normalise.
Transform random_resized_crop_flip(int64_t size, Normalization norm);
/// ImageNet evaluation: resize the shorter side to `resize`, center crop `crop`, normalise.
Transform resize_center_crop(int64_t resize, int64_t crop, Normalization norm);

/// `t`, then a bilinear resize of its float [C, H, W] output to size x size (half-pixel centres,
/// as torchvision's Resize on tensors; enlarging, antialiasing changes nothing). Normalisation
/// commutes with it (an affine map per channel; the weights of a bilinear sample sum to 1).
Transform then_resize(Transform t, int64_t size);

/// Normalisation constants: "cifar10", "cifar100", "mnist", "fashion-mnist", "imagenet".
Normalization normalization_for(const std::string& dataset);

}  // namespace rmnet
