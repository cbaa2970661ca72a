#include "rmnet/train/schedule.h"

#include <algorithm>
#include <cmath>

#include <c10/util/Exception.h>

namespace rmnet {

double learning_rate(const ScheduleOptions& s, int64_t step) {
  TORCH_CHECK(s.steps_per_epoch() >= 1 && s.epochs() >= 1, "schedule needs epochs and steps per epoch >= 1");
  const double total = static_cast<double>(s.epochs() * s.steps_per_epoch());
  const double warm = s.warmup_epochs() * static_cast<double>(s.steps_per_epoch());
  const double t = static_cast<double>(step);
  if (warm > 0 && t < warm) return s.lr() * (s.warmup_factor() + (1.0 - s.warmup_factor()) * t / warm);
  const int64_t epoch = step / s.steps_per_epoch();
  const auto& k = s.kind();
  if (k == "constant") return s.lr();
  if (k == "step") return s.lr() * std::pow(s.gamma(), static_cast<double>(epoch / std::max<int64_t>(1, s.step_size())));
  if (k == "multistep") {
    const auto passed = std::count_if(s.milestones().begin(), s.milestones().end(), [&](int64_t m) { return epoch >= m; });
    return s.lr() * std::pow(s.gamma(), static_cast<double>(passed));
  }
  if (k == "cosine") {
    const double p = std::clamp((t - warm) / std::max(1.0, total - warm), 0.0, 1.0);
    return 0.5 * s.lr() * (1.0 + std::cos(M_PI * p));
  }
  TORCH_CHECK(false, "unknown schedule '", k, "' (expected constant, step, multistep or cosine)");
}

}  // namespace rmnet
