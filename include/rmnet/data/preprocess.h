#pragma once
// The preprocessing a model expects of an image (resize, center crop, normalise), stored with the
// model as "preprocess.*" metadata. Below io/ (which writes it) and infer/ (which applies it).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>
#if RMNET_WITH_OPENCV
#include <opencv2/core.hpp>
#endif

namespace rmnet {

/// Image preprocessing: resize the shorter side to `resize`, center crop `crop` x `crop`, RGB (or
/// grayscale for 1-channel models), scale to [0, 1], (x - mean) / std per channel.
struct Preprocess {
  int64_t resize = 256;
  int64_t crop = 224;
  std::vector<double> mean = {0.485, 0.456, 0.406};
  std::vector<double> std = {0.229, 0.224, 0.225};

  /// Reads "preprocess.*" metadata of a model; nullopt when the model has none.
  static std::optional<Preprocess> from_metadata(const std::map<std::string, std::string>& metadata);
  /// Writes "preprocess.resize", "preprocess.crop", "preprocess.mean", "preprocess.std".
  void to_metadata(std::map<std::string, std::string>& metadata) const;
#if RMNET_WITH_OPENCV
  /// One image (BGR or grayscale cv::Mat, 8-bit) to a float tensor [C, crop, crop].
  torch::Tensor apply(const cv::Mat& image, int64_t channels) const;
#endif
};

}  // namespace rmnet
