// The accuracy-vs-speed plot of a compression run, drawn with OpenCV (a dependency of the data
// room already): top-1 (%) against images/s, the steps joined in order and labelled.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "rmnet/compress/compress.h"

#if RMNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace rmnet {

namespace {

/// A "nice" tick step covering `span` in about `n` steps (1, 2 or 5 times a power of ten).
double tick_step(double span, int n) {
  const double raw = span / n, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

bool plot_compress(const std::vector<CompressStep>& steps, const std::string& png_path, const std::string& title) {
#if RMNET_WITH_OPENCV
  TORCH_CHECK(!steps.empty(), "nothing to plot");
  const int W = 900, H = 600, left = 90, right = 40, top = 70, bottom = 70;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : steps) {
    x0 = std::min(x0, s.images_per_second);
    x1 = std::max(x1, s.images_per_second);
    y0 = std::min(y0, 100 * s.top1);
    y1 = std::max(y1, 100 * s.top1);
  }
  const auto pad = [](double& a, double& b, double min_span) {
    const double span = std::max(b - a, min_span);
    const double mid = (a + b) / 2;
    a = mid - 0.55 * span;
    b = mid + 0.55 * span;
  };
  pad(x0, x1, std::max(1.0, 0.1 * x1));
  pad(y0, y1, 1.0);
  x0 = std::max(0.0, x0);
  const auto px = [&](double x) { return left + static_cast<int>((x - x0) / (x1 - x0) * (W - left - right)); };
  const auto py = [&](double y) { return H - bottom - static_cast<int>((y - y0) / (y1 - y0) * (H - top - bottom)); };
  const cv::Scalar black(0, 0, 0), grey(210, 210, 210), blue(180, 90, 20), red(40, 40, 200);
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  for (double x = std::ceil(x0 / tick_step(x1 - x0, 6)) * tick_step(x1 - x0, 6); x <= x1; x += tick_step(x1 - x0, 6)) {
    cv::line(img, {px(x), top}, {px(x), H - bottom}, grey, 1);
    cv::putText(img, fmt::format("{:.0f}", x), {px(x) - 20, H - bottom + 20}, font, 0.45, black, 1, cv::LINE_AA);
  }
  for (double y = std::ceil(y0 / tick_step(y1 - y0, 6)) * tick_step(y1 - y0, 6); y <= y1; y += tick_step(y1 - y0, 6)) {
    cv::line(img, {left, py(y)}, {W - right, py(y)}, grey, 1);
    cv::putText(img, fmt::format("{:.1f}", y), {left - 55, py(y) + 5}, font, 0.45, black, 1, cv::LINE_AA);
  }
  cv::rectangle(img, {left, top}, {W - right, H - bottom}, black, 1);
  cv::putText(img, "images/s", {W / 2 - 40, H - 25}, font, 0.55, black, 1, cv::LINE_AA);
  cv::putText(img, "top-1 (%)", {10, top - 12}, font, 0.5, black, 1, cv::LINE_AA);
  cv::putText(img, title, {left, 28}, font, 0.55, black, 1, cv::LINE_AA);
  for (size_t i = 0; i < steps.size(); ++i) {
    const cv::Point p(px(steps[i].images_per_second), py(100 * steps[i].top1));
    if (i > 0 && steps[i].name != "converted" && steps[i - 1].name != "original")
      cv::line(img, {px(steps[i - 1].images_per_second), py(100 * steps[i - 1].top1)}, p, blue, 2, cv::LINE_AA);
    const bool reference = steps[i].name == "original" || steps[i].name == "converted";
    cv::circle(img, p, 6, reference ? red : blue, cv::FILLED, cv::LINE_AA);
    // labels: right of the point, or left of it near the right edge; alternately above and below
    const auto label = fmt::format("{} ({:.2f}%)", steps[i].name, 100 * steps[i].top1);
    int baseline = 0;
    const auto size = cv::getTextSize(label, font, 0.45, 1, &baseline);
    const int x = p.x + 8 + size.width > W - right ? p.x - 8 - size.width : p.x + 8;
    const int y = i % 2 == 0 ? p.y - 8 : p.y + 8 + size.height;
    cv::putText(img, label, {x, y}, font, 0.45, black, 1, cv::LINE_AA);
  }
  TORCH_CHECK(cv::imwrite(png_path, img), "could not write the plot '", png_path, "'");
  return true;
#else
  (void)steps;
  (void)png_path;
  (void)title;
  return false;
#endif
}

}  // namespace rmnet
