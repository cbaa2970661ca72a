#include "rmnet/models/model.h"

#include <torch/torch.h>

#include "rmnet/core.h"
#include "rmnet/models/registry.h"
#include "rmnet/models/resnet.h"

namespace rmnet {

int64_t ModelImpl::input_size() const {
  if (auto n = metadata_int(metadata_, "input_size")) return *n;
  if (auto n = metadata_int(metadata_, "verify_input_size")) return *n <= 32 ? 32 : 224;
  return 224;
}

std::string to_string(ModelKind kind) {
  switch (kind) {
    case ModelKind::Residual: return "residual";
    case ModelKind::Plain: return "plain";
    case ModelKind::Quantized: return "quantized";
    case ModelKind::Deployed: return "deployed";
  }
  return "?";
}

std::shared_ptr<ModelImpl> ModelImpl::make_like() const { return create_model(options_); }

std::shared_ptr<torch::nn::Module> ModelImpl::clone(const std::optional<torch::Device>& device) const {
  return clone_model(std::nullopt, device);
}

ModelPtr ModelImpl::clone_model(std::optional<torch::ScalarType> dtype, std::optional<torch::Device> device) const {
  ModelPtr copy = make_like();
  copy->metadata() = metadata_;
  std::map<std::string, torch::Tensor> src;
  for (const auto& p : named_parameters(true)) src[p.key()] = p.value();
  for (const auto& b : named_buffers(true)) src[b.key()] = b.value();
  auto dst_params = copy->named_parameters(true);
  auto dst_buffers = copy->named_buffers(true);
  TORCH_CHECK(dst_params.size() + dst_buffers.size() == src.size(), "clone of '", options_.arch(), "': the copy has ",
              dst_params.size() + dst_buffers.size(), " tensors, the model ", src.size());
  torch::NoGradGuard no_grad;
  const auto place = [&](const std::string& key, torch::Tensor& dst, bool param) {
    auto it = src.find(key);
    TORCH_CHECK(it != src.end(), "clone of '", options_.arch(), "': the copy has a tensor '", key, "' the model has not");
    const auto& s = it->second;
    const auto type = dtype && s.is_floating_point() ? *dtype : s.scalar_type();
    auto value = s.detach().to(device.value_or(s.device()), type, /*non_blocking=*/false, /*copy=*/true);
    dst.set_data(value);
    if (param) dst.set_requires_grad(s.requires_grad());
  };
  for (auto& p : dst_params) place(p.key(), p.value(), true);
  for (auto& b : dst_buffers) place(b.key(), b.value(), false);
  // training mode per module (a frozen BatchNorm in eval inside a model in training stays so)
  const auto mine = named_modules("", /*include_self=*/true);
  auto theirs = copy->named_modules("", /*include_self=*/true);
  for (const auto& m : mine)
    if (auto* d = theirs.find(m.key())) (*d)->train(m.value()->is_training());
  return copy;
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
