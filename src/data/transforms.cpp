#include "rmnet/data/transforms.h"

#include <cmath>

#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgproc.hpp>
#endif

namespace rmnet {
namespace {

void check_norm(const Normalization& n, int64_t channels) {
  TORCH_CHECK(static_cast<int64_t>(n.mean.size()) == channels && static_cast<int64_t>(n.std.size()) == channels,
              "normalisation has ", n.mean.size(), " channels, the image ", channels);
}

/// Crops [y0, y0+h) x [x0, x0+w) of a uint8 CHW image (zero outside), optionally mirrored,
/// normalised to float.
torch::Tensor crop_normalize(const torch::Tensor& img, int64_t y0, int64_t x0, int64_t h, int64_t w, bool flip,
                             const Normalization& n) {
  const int64_t C = img.size(0), H = img.size(1), W = img.size(2);
  check_norm(n, C);
  auto src = img.contiguous();
  const auto* s = src.data_ptr<uint8_t>();
  auto out = torch::empty({C, h, w}, torch::kFloat);
  auto* o = out.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const float scale = static_cast<float>(1.0 / (255.0 * n.std[c]));
    const float shift = static_cast<float>(-n.mean[c] / n.std[c]);
    for (int64_t y = 0; y < h; ++y) {
      const int64_t sy = y0 + y;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = x0 + (flip ? w - 1 - x : x);
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        const float v = inside ? s[(c * H + sy) * W + sx] : 0.0f;
        o[(c * h + y) * w + x] = v * scale + shift;
      }
    }
  }
  return out;
}

/// Bilinear resize of a uint8 [C, H, W] image to [C, h, w] (OpenCV's INTER_LINEAR, or LibTorch's
/// bilinear interpolation without OpenCV: the same half-pixel sampling, rounding may differ by 1).
torch::Tensor resize_u8(const torch::Tensor& img, int64_t h, int64_t w) {
#if RMNET_WITH_OPENCV
  auto hwc = img.permute({1, 2, 0}).contiguous();
  const cv::Mat m(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC(static_cast<int>(hwc.size(2))),
                  hwc.data_ptr<uint8_t>());
  cv::Mat r;
  cv::resize(m, r, cv::Size(static_cast<int>(w), static_cast<int>(h)), 0, 0, cv::INTER_LINEAR);
  // clone: the result must own its memory (r is freed on return)
  return torch::from_blob(r.data, {r.rows, r.cols, img.size(0)}, torch::kUInt8).permute({2, 0, 1})
      .clone(torch::MemoryFormat::Contiguous);
#else
  namespace F = torch::nn::functional;
  auto x = img.unsqueeze(0).to(torch::kFloat);
  auto y = F::interpolate(x, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kBilinear)
                                 .align_corners(false));
  return y.squeeze(0).round().clamp(0, 255).to(torch::kUInt8).contiguous();
#endif
}

}  // namespace

Transform normalize(Normalization norm) {
  return [norm](const torch::Tensor& img, Rng&) {
    return crop_normalize(img, 0, 0, img.size(1), img.size(2), false, norm);
  };
}

Transform random_crop_flip(int64_t padding, Normalization norm, bool flip) {
  return [padding, norm, flip](const torch::Tensor& img, Rng& rng) {
    std::uniform_int_distribution<int64_t> off(0, 2 * padding);
    const int64_t dy = off(rng) - padding, dx = off(rng) - padding;
    const bool mirror = flip && std::bernoulli_distribution(0.5)(rng);
    return crop_normalize(img, dy, dx, img.size(1), img.size(2), mirror, norm);
  };
}

Transform random_resized_crop_flip(int64_t size, Normalization norm) {
  return [size, norm](const torch::Tensor& img, Rng& rng) {
    const int64_t H = img.size(1), W = img.size(2);
    const double area = static_cast<double>(H * W);
    std::uniform_real_distribution<double> scale(0.08, 1.0), logr(std::log(3.0 / 4.0), std::log(4.0 / 3.0));
    int64_t h = H, w = W, y = 0, x = 0;
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {  // torchvision's procedure
      const double a = area * scale(rng), r = std::exp(logr(rng));
      const auto cw = static_cast<int64_t>(std::lround(std::sqrt(a * r)));
      const auto ch = static_cast<int64_t>(std::lround(std::sqrt(a / r)));
      if (cw > 0 && ch > 0 && cw <= W && ch <= H) {
        h = ch;
        w = cw;
        y = std::uniform_int_distribution<int64_t>(0, H - h)(rng);
        x = std::uniform_int_distribution<int64_t>(0, W - w)(rng);
        found = true;
      }
    }
    if (!found) {  // fall back to a center crop of the whole image
      h = H;
      w = W;
    }
    auto r = resize_u8(img.slice(1, y, y + h).slice(2, x, x + w), size, size);
    const bool mirror = std::bernoulli_distribution(0.5)(rng);
    return crop_normalize(r, 0, 0, size, size, mirror, norm);
  };
}

Transform resize_center_crop(int64_t resize, int64_t crop, Normalization norm) {
  return [resize, crop, norm](const torch::Tensor& img, Rng&) {
    const int64_t H = img.size(1), W = img.size(2);
    const double s = static_cast<double>(resize) / static_cast<double>(std::min(H, W));
    const int64_t nh = std::lround(H * s), nw = std::lround(W * s);
    return crop_normalize(resize_u8(img, nh, nw), (nh - crop) / 2, (nw - crop) / 2, crop, crop, false, norm);
  };
}

Transform then_resize(Transform t, int64_t size) {
  TORCH_CHECK(size > 0, "then_resize: the size must be positive (got ", size, ")");
  return [t = std::move(t), size](const torch::Tensor& img, Rng& rng) {
    auto x = t(img, rng);
    if (x.size(1) == size && x.size(2) == size) return x;
    namespace F = torch::nn::functional;
    return F::interpolate(x.unsqueeze(0), F::InterpolateFuncOptions()
                                              .size(std::vector<int64_t>{size, size})
                                              .mode(torch::kBilinear)
                                              .align_corners(false))
        .squeeze(0)
        .contiguous();
  };
}

Normalization normalization_for(const std::string& dataset) {
  if (dataset == "cifar10") return {{0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};
  if (dataset == "cifar100") return {{0.5071, 0.4865, 0.4409}, {0.2673, 0.2564, 0.2762}};
  if (dataset == "mnist") return {{0.1307}, {0.3081}};
  if (dataset == "fashion-mnist") return {{0.2860}, {0.3530}};
  if (dataset == "imagenet" || dataset == "folder") return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
  TORCH_CHECK(false, "no normalisation known for data set '", dataset, "'");
}

}  // namespace rmnet
