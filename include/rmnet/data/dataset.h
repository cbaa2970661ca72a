#pragma once
// Image classification data sets: a common interface, and an in-memory data set of uint8 images.
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace rmnet {

/// Per-channel normalisation constants of a data set (on [0, 1] pixel values).
struct Normalization {
  std::vector<double> mean, std;
};

/// One example: a uint8 image [C, H, W] and its class.
struct Sample {
  torch::Tensor image;
  int64_t label = 0;
};

/// A random-access classification data set. Implementations must be safe to call get() from
/// several threads at once (the loader's workers do).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual Sample get(size_t index) const = 0;
  virtual int64_t num_classes() const = 0;
  virtual int64_t channels() const = 0;
  /// Class names when known (folder names, CIFAR's), else empty.
  virtual std::vector<std::string> class_names() const { return {}; }
};
using DatasetPtr = std::shared_ptr<const Dataset>;

/// A data set held in memory: images uint8 [N, C, H, W], labels int64 [N].
class TensorDataset : public Dataset {
 public:
  TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes,
                std::vector<std::string> class_names = {});
  size_t size() const override { return static_cast<size_t>(labels_.size(0)); }
  Sample get(size_t index) const override;
  int64_t num_classes() const override { return num_classes_; }
  int64_t channels() const override { return images_.size(1); }
  std::vector<std::string> class_names() const override { return class_names_; }
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 private:
  torch::Tensor images_, labels_;
  int64_t num_classes_;
  std::vector<std::string> class_names_;
};

/// The first n samples of another data set (quick runs, e.g. `rmnet train --max-train-samples`).
class Subset : public Dataset {
 public:
  /// n larger than the data set takes all of it.
  Subset(DatasetPtr base, size_t n);
  size_t size() const override { return n_; }
  Sample get(size_t index) const override;
  int64_t num_classes() const override { return base_->num_classes(); }
  int64_t channels() const override { return base_->channels(); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }

 private:
  DatasetPtr base_;
  size_t n_;
};

}  // namespace rmnet
