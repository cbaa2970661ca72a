#include "progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace rmnet::cli {

Progress::Progress(std::string label) : label_(std::move(label)), tty_(::isatty(::fileno(stdout)) != 0) {}

std::string format_duration(double s) {
  const auto t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60) : fmt::format("{}:{:02}", t / 60, t % 60);
}

void Progress::update(size_t done, size_t total, const std::string& info, double seconds) {
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  const double eta = frac > 0 ? seconds * (1 - frac) / frac : 0.0;
  if (tty_) {
    const int width = 24, fill = static_cast<int>(frac * width);
    std::fputs(fmt::format("\r{} {:3.0f}% |{}{}| {} ETA {} ", label_, frac * 100, std::string(fill, '#'),
                           std::string(width - fill, ' '), info, format_duration(eta))
                   .c_str(),
               stdout);
    std::fflush(stdout);
    open_ = true;
  } else {
    const int decile = static_cast<int>(frac * 10);
    if (decile != last_decile_) {
      last_decile_ = decile;
      std::fputs(fmt::format("{} {:3.0f}% ({}/{}) {} ETA {}\n", label_, frac * 100, done, total, info,
                             format_duration(eta))
                     .c_str(),
                 stdout);
      std::fflush(stdout);
    }
  }
}

void Progress::finish() {
  if (tty_ && open_) std::fputs("\n", stdout);
  open_ = false;
}

FitProgress::FitProgress(FitOptions& options, bool print) {
  if (!print) return;
  const int64_t epochs = options.epochs();
  options.on_epoch_begin([this, epochs](int64_t e) { bar_.emplace(fmt::format("epoch {}/{}", e + 1, epochs)); });
  options.on_batch([this](size_t b, size_t n, const EpochStats& s, double lr) {
    if (bar_)
      bar_->update(b, n, fmt::format("loss {:.4f} top1 {:.2f}% {:.0f} img/s lr {:.4g}", s.loss, 100 * s.top1,
                                     s.images_per_second(), lr),
                   s.seconds);
  });
  options.on_epoch([this, epochs](const EpochRecord& r) {
    if (bar_) bar_->finish();
    std::fputs(fmt::format("epoch {}/{}: train loss {:.4f} top1 {:.2f}% | test loss {:.4f} top1 {:.2f}% top5 {:.2f}% | "
                           "{:.0f} img/s, {}\n",
                           r.epoch, epochs, r.train.loss, 100 * r.train.top1, r.test.loss, 100 * r.test.top1,
                           100 * r.test.top5, r.train.images_per_second(), format_duration(r.train.seconds))
                   .c_str(),
               stdout);
    std::fflush(stdout);
  });
}

FitProgress::~FitProgress() {
  if (bar_) bar_->finish();
}

}  // namespace rmnet::cli
