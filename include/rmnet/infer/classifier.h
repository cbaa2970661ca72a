#pragma once
// C++ inference API: load a model file, classify cv::Mat images (BGR as OpenCV reads them, any
// size), with the preprocessing stored in the model file.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>
#if RMNET_WITH_OPENCV
#include <opencv2/core.hpp>
#endif

#include "rmnet/data/preprocess.h"  // Preprocess (declared here before 0.2)
#include "rmnet/deploy/precision.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/models/model.h"

namespace rmnet {

struct Prediction {
  int64_t index = 0;
  double score = 0.0;  ///< softmax probability
  std::string label;   ///< from the labels file, or empty
};

struct ClassifierOptions {
  /// A text file with one class name per line (optional).
  TORCH_ARG(std::string, labels) = "";
  TORCH_ARG(int64_t, batch_size) = 32;
  /// Preprocessing to use instead of the model file's.
  TORCH_ARG(std::optional<Preprocess>, preprocess) = std::nullopt;
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// Auto: plain networks run on the onednn runtime on the CPU (torchscript elsewhere;
  /// deploy/runtime.h), residual ones eagerly.
  TORCH_ARG(Runtime, runtime) = Runtime::Auto;
  /// Compute precision of a plain network on a deployed runtime: F32 (the default), BF16, or Auto
  /// (deploy/precision.h: bf16 where the CPU runs it natively and its top-1 agrees with float32's on
  /// the check set at least 99.9% of the time). BF16 on a model that runs eagerly is refused.
  TORCH_ARG(Precision, precision) = Precision::F32;
  /// Auto: image files to check the agreement on (preprocessed like any input); none: synthetic
  /// images (check_images of them at the preprocessing's crop size), a weak proxy.
  TORCH_ARG(std::vector<std::string>, check_files) = {};
  TORCH_ARG(int64_t, check_images) = 256;
};

class Classifier {
 public:
  /// Loads the model file (residual or plain; eval mode). Throws naming the file if it cannot be
  /// read, if it holds no preprocessing and none is given, or if the labels file does not match
  /// the number of classes.
  explicit Classifier(const std::string& model_path, ClassifierOptions options = ClassifierOptions());
#if RMNET_WITH_OPENCV
  /// Top-k predictions per image, in order; images are batched by options.batch_size.
  std::vector<std::vector<Prediction>> classify(const std::vector<cv::Mat>& images, int64_t top_k = 5);
#endif
  /// Reads image files (OpenCV) and classifies them; throws naming a file that cannot be decoded
  /// (or, in a build without OpenCV, saying that it cannot decode images).
  std::vector<std::vector<Prediction>> classify_files(const std::vector<std::string>& paths, int64_t top_k = 5);
  const Preprocess& preprocess() const { return preprocess_; }
  const ModelImpl& model() const { return *model_; }
  /// The precision the model runs in and why (ClassifierOptions::precision; Auto: the policy's
  /// measurement).
  const PrecisionChoice& precision() const { return precision_; }

 private:
  ModelPtr model_;
  ClassifierOptions options_;
  Preprocess preprocess_;
  std::vector<std::string> labels_;
  PrecisionChoice precision_;
};

}  // namespace rmnet
