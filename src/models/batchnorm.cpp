#include "rmnet/models/batchnorm.h"

#include <cstdint>

#include <torch/autograd.h>
#include <torch/torch.h>

namespace rmnet {
namespace {

/// y = sum over ranks of x; the gradient is the sum over ranks of the gradients (every rank's
/// loss depends on every rank's x through the global statistics).
struct AllReduceSumFunction : torch::autograd::Function<AllReduceSumFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const AllReduceSum* sum) {
    // The function lives in the BatchNorm module (shared_ptr), which outlives its graph.
    ctx->saved_data["sum"] = static_cast<int64_t>(reinterpret_cast<std::intptr_t>(sum));
    ctx->saved_data["numel"] = x.numel();
    auto y = x.clone();
    (*sum)(y);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* sum = reinterpret_cast<const AllReduceSum*>(static_cast<std::intptr_t>(ctx->saved_data["sum"].toInt()));
    // Every rank must take part in the collective, gradient or not.
    auto g = grads[0].defined() ? grads[0].contiguous().clone()
                                : torch::zeros({ctx->saved_data["numel"].toInt()}, torch::kDouble);
    (*sum)(g);
    return {g, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var,
                              torch::Tensor num_batches_tracked, std::optional<double> momentum, double eps,
                              const AllReduceSum& sum) {
  TORCH_CHECK(input.dim() >= 2, "synchronised BatchNorm: expected an input with a channel dimension, got ",
              input.sizes());
  const int64_t channels = input.size(1);
  // Statistics in float32 at least (autocast feeds bf16/fp16 activations), combined in float64.
  const auto compute = at::isReducedFloatingType(input.scalar_type()) ? torch::kFloat : input.scalar_type();
  auto x = input.to(compute);
  std::vector<int64_t> dims{0}, shape(static_cast<size_t>(input.dim()), 1);
  for (int64_t d = 2; d < input.dim(); ++d) dims.push_back(d);
  shape[1] = channels;
  // Shifting by the running mean (the same on every rank) keeps E[x^2] - E[x]^2 from cancelling.
  torch::Tensor shift;
  if (running_mean.defined()) shift = running_mean.detach().to(compute);
  auto centred = shift.defined() ? x - shift.view(shape) : x;
  const double count = static_cast<double>(x.numel() / std::max<int64_t>(channels, 1));
  auto local = torch::cat({centred.sum(dims), centred.square().sum(dims)}).to(torch::kDouble);
  local = torch::cat({local, torch::full({1}, count, local.options())});
  auto global = AllReduceSumFunction::apply(local, &sum);
  const auto n = global.select(0, 2 * channels).detach();
  // The global count is at least the local one: read it back (a device sync on CUDA) only when
  // the local count alone does not settle the check.
  if (count <= 1) {
    const double total = n.item<double>();
    TORCH_CHECK(total > 1, "synchronised BatchNorm: expected more than 1 value per channel over all ranks, got ",
                total);
  }
  auto mean_c = global.slice(0, 0, channels) / n;
  auto var = (global.slice(0, channels, 2 * channels) / n - mean_c.square()).clamp_min(0);
  auto mean = shift.defined() ? mean_c + shift.to(torch::kDouble) : mean_c;
  auto invstd = torch::rsqrt(var + eps);
  auto scale = weight.defined() ? weight.to(torch::kDouble) * invstd : invstd;
  auto offset = -mean * scale;
  if (bias.defined()) offset = offset + bias.to(torch::kDouble);
  auto y = torch::addcmul(offset.to(compute).view(shape), x, scale.to(compute).view(shape)).to(input.scalar_type());

  if (running_mean.defined() && running_var.defined()) {
    torch::NoGradGuard no_grad;
    double factor = momentum.value_or(0.0);
    if (num_batches_tracked.defined()) {
      num_batches_tracked.add_(1);
      if (!momentum) factor = 1.0 / num_batches_tracked.item<double>();  // cumulative moving average
    }
    running_mean.mul_(1 - factor).add_(mean.detach().to(running_mean.scalar_type()), factor);
    running_var.mul_(1 - factor).add_((var.detach() * (n / (n - 1))).to(running_var.scalar_type()), factor);
  }
  return y;
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& input) {
  if (!is_training() || !sync_) return torch::nn::BatchNorm2dImpl::forward(input);
  TORCH_CHECK(input.dim() == 4, "BatchNorm2d: expected 4D input (got ", input.dim(), "D input)");
  const bool track = options.track_running_stats();
  return sync_batch_norm(input, options.affine() ? weight : torch::Tensor(), options.affine() ? bias : torch::Tensor(),
                         track ? running_mean : torch::Tensor(), track ? running_var : torch::Tensor(),
                         track ? num_batches_tracked : torch::Tensor(), options.momentum(), options.eps(), *sync_);
}

size_t set_batchnorm_sync(torch::nn::Module& module, std::shared_ptr<const AllReduceSum> sum) {
  size_t n = 0;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    auto* m = item.value().get();
    if (auto* ours = dynamic_cast<BatchNorm2dImpl*>(m)) {
      ours->set_sync(sum);
      ++n;
    } else if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m)) {
      TORCH_CHECK(false, "synchronised BatchNorm: module '", item.key(),
                  "' is a torch::nn::BatchNorm2d, which cannot synchronise; build it as rmnet::BatchNorm2d");
    }
  }
  return n;
}

}  // namespace rmnet
