#pragma once
// MNIST / Fashion-MNIST in the IDX format (raw or gzip-compressed).
#include <string>

#include "rmnet/data/dataset.h"

namespace rmnet {

/// Reads an IDX image file (magic 0x00000803: uint8 [N, H, W]) as uint8 [N, 1, H, W].
/// A ".gz" file (or any file starting with the gzip magic) is decompressed. Throws naming the
/// file for a missing file, a wrong magic number, or a truncated file.
torch::Tensor read_idx_images(const std::string& path);
/// Reads an IDX label file (magic 0x00000801: uint8 [N]) as int64 [N].
torch::Tensor read_idx_labels(const std::string& path);

/// The train or test split of MNIST / Fashion-MNIST in `dir` (files train-images-idx3-ubyte,
/// train-labels-idx1-ubyte, t10k-..., each optionally ending in .gz). Checks that images and
/// labels agree in count and that labels are in [0, 10).
std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, bool train,
                                          std::vector<std::string> class_names = {});

/// Where Debian's dataset-fashion-mnist package puts the files.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
/// Fashion-MNIST's class names.
std::vector<std::string> fashion_mnist_classes();

}  // namespace rmnet
