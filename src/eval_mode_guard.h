#pragma once
// Internal: puts a module and all its children in eval mode and gives each its previous
// training flag back on destruction (verification, evaluation and prediction use it).
#include <vector>

#include <torch/nn/module.h>

namespace rmnet::detail {

class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& m) : module_(m) {
    for (const auto& c : m.modules(true)) flags_.push_back(c->is_training());
    m.eval();
  }
  ~EvalModeGuard() {
    size_t i = 0;
    for (const auto& c : module_.modules(true)) c->train(flags_[i++]);
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module& module_;
  std::vector<bool> flags_;
};

}  // namespace rmnet::detail
