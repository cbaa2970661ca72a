#pragma once
// A progress bar on a terminal, plain lines (every 10%) in logs.
#include <string>

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

}  // namespace rmnet::cli
