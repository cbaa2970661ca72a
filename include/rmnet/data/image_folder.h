#pragma once
// An ImageNet-style folder: one sub-folder per class, JPEG/PNG images decoded with OpenCV.
#include <string>
#include <vector>

#include "rmnet/data/dataset.h"

namespace rmnet {

class ImageFolder : public Dataset {
 public:
  /// Scans `root`: sorted sub-folder names are the classes; files ending in .jpg, .jpeg, .png,
  /// .bmp (any case) are the images. Throws naming the folder if root is missing, has no class
  /// folders, or a class folder holds no image. `channels` is 3 (RGB) or 1 (grayscale).
  explicit ImageFolder(const std::string& root, int64_t channels = 3);
  size_t size() const override { return files_.size(); }
  /// Decodes image `index` as uint8 [C, H, W] (RGB order). Throws naming the file if it cannot be decoded.
  Sample get(size_t index) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  int64_t channels() const override { return channels_; }
  std::vector<std::string> class_names() const override { return classes_; }
  const std::string& path(size_t index) const { return files_.at(index).first; }

 private:
  std::vector<std::string> classes_;
  std::vector<std::pair<std::string, int64_t>> files_;
  int64_t channels_;
};

/// Decodes an image file with OpenCV as uint8 [C, H, W], RGB (or 1 channel). Throws naming the file.
torch::Tensor read_image(const std::string& path, int64_t channels = 3);

}  // namespace rmnet
