#include "rmnet/models/se.h"

#include <algorithm>

#include <torch/torch.h>

namespace rmnet {
namespace nn = torch::nn;

int64_t se_hidden(int64_t channels, int64_t reduction) {
  TORCH_CHECK(reduction >= 1, "SE reduction must be at least 1 (got ", reduction, ")");
  return std::max<int64_t>(1, channels / reduction);
}

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t channels, int64_t hidden) {
  fc1 = register_module("fc1", nn::Conv2d(nn::Conv2dOptions(channels, hidden, 1)));
  fc2 = register_module("fc2", nn::Conv2d(nn::Conv2dOptions(hidden, channels, 1)));
}

torch::Tensor SqueezeExcitationImpl::scale(const torch::Tensor& x) {
  return torch::sigmoid(fc2(torch::relu(fc1(torch::adaptive_avg_pool2d(x, {1, 1})))));
}

torch::Tensor SqueezeExcitationImpl::forward(const torch::Tensor& x) { return x * scale(x); }

}  // namespace rmnet
