#include "rmnet/data/dataset.h"

#include <algorithm>

#include <torch/torch.h>

namespace rmnet {

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes,
                             std::vector<std::string> class_names)
    : images_(std::move(images)), labels_(std::move(labels)), num_classes_(num_classes),
      class_names_(std::move(class_names)) {
  TORCH_CHECK(images_.dim() == 4 && images_.scalar_type() == torch::kUInt8,
              "TensorDataset images must be uint8 [N, C, H, W] (got ", images_.scalar_type(), " ", images_.sizes(), ")");
  TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == images_.size(0), "TensorDataset: ", images_.size(0),
              " images but ", labels_.numel(), " labels");
  labels_ = labels_.to(torch::kLong);
  if (labels_.numel() > 0) {
    const auto lo = labels_.min().item<int64_t>(), hi = labels_.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_classes_, "TensorDataset: labels must be in [0, ", num_classes_, ") (got ", lo,
                "..", hi, ")");
  }
}

Sample TensorDataset::get(size_t index) const {
  TORCH_CHECK(index < size(), "sample index ", index, " out of range (", size(), " samples)");
  return {images_[static_cast<int64_t>(index)], labels_[static_cast<int64_t>(index)].item<int64_t>()};
}

Subset::Subset(DatasetPtr base, size_t n) : base_(std::move(base)) {
  TORCH_CHECK(base_, "Subset of a null data set");
  n_ = std::min(n, base_->size());
}

Sample Subset::get(size_t index) const {
  TORCH_CHECK(index < n_, "sample index ", index, " out of range (", n_, " samples)");
  return base_->get(index);
}

}  // namespace rmnet
