#include "rmnet/infer/classifier.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include "rmnet/io/model_file.h"

namespace rmnet {
namespace {
#if RMNET_WITH_OPENCV
cv::Mat read_image(const std::string& path) {
  cv::Mat m = cv::imread(path, cv::IMREAD_UNCHANGED);
  TORCH_CHECK(!m.empty(), "image '", path, "': cannot decode (missing, corrupt, or not an image)");
  if (m.depth() != CV_8U) m.convertTo(m, CV_8U);
  return m;
}
#endif
}  // namespace

Classifier::Classifier(const std::string& model_path, ClassifierOptions options) : options_(std::move(options)) {
  auto model = load_model(model_path);
  auto p = options_.preprocess() ? options_.preprocess() : Preprocess::from_metadata(model->metadata());
  TORCH_CHECK(p, "model file '", model_path,
              "' stores no preprocessing (preprocess.* metadata); give ClassifierOptions::preprocess");
  preprocess_ = *p;
  if (!options_.labels().empty()) {
    std::ifstream in(options_.labels());
    TORCH_CHECK(in, "labels file '", options_.labels(), "': cannot open");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) labels_.push_back(line);
    TORCH_CHECK(static_cast<int64_t>(labels_.size()) == model->options().num_classes(), "labels file '",
                options_.labels(), "' has ", labels_.size(), " names, the model ", model->options().num_classes(),
                " classes");
  }
  auto deploy = DeployOptions().device(options_.device()).runtime(options_.runtime());
  precision_.native_bf16 = cpu_has_native_bf16();  // Auto: choose_precision says it again
  switch (options_.precision()) {
    case Precision::F32:
      precision_.reason = "fp32: asked for (the default)";
      break;
    case Precision::BF16:
      precision_.dtype = torch::kBFloat16;
      precision_.reason = "bf16: asked for";
      break;
    case Precision::Auto: {
      const auto check = [&] {
        if (options_.check_files().empty())
          return synthetic_check_images(*model, preprocess_.crop, options_.check_images()).to(options_.device());
#if RMNET_WITH_OPENCV
        std::vector<torch::Tensor> images;
        for (const auto& f : options_.check_files())
          images.push_back(preprocess_.apply(read_image(f), model->options().in_channels()));
        return torch::stack(images).to(options_.device());
#else
        TORCH_CHECK(false, "ClassifierOptions::check_files: cannot decode images in a build without OpenCV");
        return torch::Tensor();
#endif
      };
      precision_ = choose_precision(model, check, deploy, PrecisionOptions().batch_size(options_.batch_size()));
      break;
    }
  }
  model_ = prepare_inference(model, options_.runtime(), deploy.dtype(precision_.dtype));
  check_runs_in(*model_, precision_.dtype, "model file '" + model_path + "'");
}

#if RMNET_WITH_OPENCV
std::vector<std::vector<Prediction>> Classifier::classify(const std::vector<cv::Mat>& images, int64_t top_k) {
  torch::NoGradGuard no_grad;
  const int64_t k = std::min<int64_t>(top_k, model_->options().num_classes());
  const int64_t channels = model_->options().in_channels();
  std::vector<std::vector<Prediction>> out;
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(options_.batch_size())) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(options_.batch_size()));
    std::vector<torch::Tensor> batch;
    for (size_t i = begin; i < end; ++i) batch.push_back(preprocess_.apply(images[i], channels));
    auto probs = torch::softmax(model_->forward(torch::stack(batch).to(options_.device())), 1).cpu();
    auto [scores, idx] = probs.topk(k, 1);
    for (int64_t r = 0; r < scores.size(0); ++r) {
      std::vector<Prediction> preds;
      for (int64_t j = 0; j < k; ++j) {
        Prediction p;
        p.index = idx[r][j].item<int64_t>();
        p.score = scores[r][j].item<double>();
        if (!labels_.empty()) p.label = labels_[static_cast<size_t>(p.index)];
        preds.push_back(p);
      }
      out.push_back(std::move(preds));
    }
  }
  return out;
}

#endif

std::vector<std::vector<Prediction>> Classifier::classify_files(const std::vector<std::string>& paths, int64_t top_k) {
#if !RMNET_WITH_OPENCV
  TORCH_CHECK(false, "cannot decode images: this rmnet was built without OpenCV (RMNET_WITH_OPENCV=OFF)");
  return {};
#else
  std::vector<cv::Mat> images;
  for (const auto& p : paths) images.push_back(read_image(p));
  return classify(images, top_k);
#endif
}

}  // namespace rmnet
