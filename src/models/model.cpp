#include "rmnet/models/model.h"

#include <torch/torch.h>

#include "rmnet/models/resnet.h"

namespace rmnet {

int64_t ModelImpl::input_size() const {
  if (auto it = metadata_.find("input_size"); it != metadata_.end()) return std::stoll(it->second);
  if (auto it = metadata_.find("verify_input_size"); it != metadata_.end())
    return std::stoll(it->second) <= 32 ? 32 : 224;
  return 224;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

void init_conv_bn(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

void randomize_batchnorm(torch::nn::Module& module, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto uniform = [&](const torch::Tensor& t, double lo, double hi) {
    auto v = torch::empty(t.sizes(), torch::TensorOptions().dtype(torch::kDouble));
    v.uniform_(lo, hi, gen);
    t.copy_(v);
  };
  auto normal = [&](const torch::Tensor& t, double mean, double std) {
    auto v = torch::empty(t.sizes(), torch::TensorOptions().dtype(torch::kDouble));
    v.normal_(mean, std, gen);
    t.copy_(v);
  };
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      normal(bn->running_mean, 0.0, 1.0);
      uniform(bn->running_var, 0.25, 4.0);
      if (bn->weight.defined()) uniform(bn->weight, 0.2, 1.5);
      if (bn->bias.defined()) normal(bn->bias, 0.0, 0.5);
    } else if (auto* block = dynamic_cast<ResidualBlockBase*>(m.get())) {
      const auto& s = block->stats();
      if (s.defined()) {
        normal(s.in_mean, 0.0, 1.0);
        uniform(s.in_var, 0.25, 4.0);
        normal(s.out_mean, 0.0, 1.0);
        uniform(s.out_var, 0.25, 4.0);
      }
    }
  }
}

}  // namespace rmnet
