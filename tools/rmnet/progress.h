#pragma once
// A progress bar on a terminal, plain lines (every 10%) in logs.
#include <optional>
#include <string>

#include "rmnet/train/fit.h"

namespace rmnet::cli {

class Progress {
 public:
  explicit Progress(std::string label);
  /// done of total steps; `info` is appended (loss, accuracy, images/s).
  void update(size_t done, size_t total, const std::string& info, double seconds);
  void finish();

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = -1;
  bool open_ = false;
};

std::string format_duration(double seconds);

/// fit's progress on stdout: a bar per epoch, then the epoch's line (train and test loss and
/// accuracy, speed). Installs on_epoch_begin, on_batch and on_epoch in `options`; they refer to
/// this object, which must outlive the fit call. Prints nothing when `print` is false (ranks > 0).
class FitProgress {
 public:
  FitProgress(FitOptions& options, bool print);
  ~FitProgress();  ///< finishes a bar left open (a stop or an error during the epoch)
  FitProgress(const FitProgress&) = delete;
  FitProgress& operator=(const FitProgress&) = delete;

 private:
  std::optional<Progress> bar_;
};

}  // namespace rmnet::cli
