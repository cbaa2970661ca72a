// The precision policy (deploy/precision.h): native bf16 detection and the top-1 agreement check.
#include "rmnet/deploy/precision.h"

#include <algorithm>
#include <cstdint>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/models/plain.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

Precision precision_from_string(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return Precision::F32;
  if (s == "bf16" || s == "bfloat16") return Precision::BF16;
  if (s == "auto") return Precision::Auto;
  TORCH_CHECK(false, "precision: expected fp32, bf16 or auto (got '", s, "')");
}

std::string to_string(Precision p) {
  switch (p) {
    case Precision::F32: return "fp32";
    case Precision::BF16: return "bf16";
    case Precision::Auto: return "auto";
  }
  return "?";
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE: XGETBV usable
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const uint64_t xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  const bool os_avx512 = (xcr0 & 0xE6) == 0xE6;                // SSE, AVX, opmask, ZMM state
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const unsigned max_subleaf = a;
  const bool avx512f = b & (1u << 16);
  const bool amx_bf16 = (d & (1u << 22)) && (d & (1u << 24));  // AMX-BF16 and AMX-TILE
  bool avx512_bf16 = false;
  if (max_subleaf >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512_bf16 = a & (1u << 5);
  return (os_avx512 && avx512f && avx512_bf16) || (os_amx && amx_bf16);
#else
  return false;
#endif
}

std::string PrecisionChoice::dtype_name() const { return dtype == torch::kBFloat16 ? "bf16" : "fp32"; }

std::string PrecisionChoice::to_json() const {
  return nlohmann::json{{"dtype", dtype_name()},
                        {"native_bf16", native_bf16},
                        {"agreement", agreement},
                        {"checked", checked},
                        {"reason", reason}}
      .dump();
}

void check_runs_in(const ModelImpl& prepared, torch::ScalarType dtype, const std::string& what) {
  if (dtype == torch::kFloat) return;
  const auto* deployed = as_deployed(prepared);
  TORCH_CHECK(deployed && deployed->deploy_options().dtype() == dtype, what, ": ",
              dtype == torch::kBFloat16 ? std::string("bf16") : std::string(c10::toString(dtype)),
              " runs on the deployed float runtimes (a plain network on onednn or torchscript: convert a residual "
              "model first; a quantized one runs INT8); this model runs on the ",
              runtime_name(prepared), " runtime");
}

namespace {

torch::Tensor top1(ModelImpl& runner, const torch::Tensor& check, int64_t batch) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < check.size(0); i += batch)
    out.push_back(runner.forward(check.narrow(0, i, std::min(batch, check.size(0) - i))).argmax(1).cpu());
  return torch::cat(out);
}

}  // namespace

PrecisionChoice choose_precision(const ModelPtr& model, const torch::Tensor& check, const DeployOptions& options,
                                 const PrecisionOptions& policy) {
  return choose_precision(model, [&] { return check; }, options, policy);
}

PrecisionChoice choose_precision(const ModelPtr& model, const std::function<torch::Tensor()>& make_check,
                                 const DeployOptions& options, const PrecisionOptions& policy) {
  TORCH_CHECK(model, "choose_precision: no model");
  TORCH_CHECK(policy.min_agreement() >= 0.0 && policy.min_agreement() <= 1.0,
              "choose_precision: min_agreement must be in [0, 1] (got ", policy.min_agreement(), ")");
  TORCH_CHECK(policy.batch_size() >= 1, "choose_precision: batch_size must be >= 1");
  PrecisionChoice r;
  r.native_bf16 = policy.native_bf16() ? *policy.native_bf16() : cpu_has_native_bf16();
  const auto f32 = [&](std::string why) {
    r.dtype = torch::kFloat;
    r.reason = "fp32: " + std::move(why);
    return r;
  };
  if (const auto* d = as_deployed(*model)) {
    r.dtype = d->deploy_options().dtype();
    r.reason = fmt::format("{}: already deployed in it", r.dtype_name());
    return r;
  }
  if (dynamic_cast<const QuantizedNetImpl*>(model.get()))
    return f32("a quantized network runs INT8 (its float parts in float32)");
  const auto* plain = dynamic_cast<const PlainNetImpl*>(model.get());
  if (!plain) return f32("a residual model runs eagerly in float32 (convert it to deploy it in bf16)");
  if (options.runtime() == Runtime::Eager) return f32("the eager runtime runs float32");
  if (!options.device().is_cpu()) return f32("auto chooses bf16 on the CPU only (device " + options.device().str() + ")");
  if (!r.native_bf16) return f32("this CPU has no native bf16 (AVX512_BF16 or AMX-BF16): emulated bf16 is slower");
  const torch::Tensor check = make_check();
  TORCH_CHECK(check.defined() && check.dim() == 4 && check.size(0) >= 1 && check.is_floating_point(),
              "choose_precision: the check set must be float images [N, C, H, W] with N >= 1");
  torch::NoGradGuard no_grad;
  auto full = prepare_inference(model, options.runtime(), DeployOptions(options).dtype(torch::kFloat));
  auto half = prepare_inference(model, options.runtime(), DeployOptions(options).dtype(torch::kBFloat16));
  const auto a = top1(*full, check, policy.batch_size()), b = top1(*half, check, policy.batch_size());
  r.checked = check.size(0);
  r.agreement = a.eq(b).to(torch::kDouble).mean().item<double>();
  const auto measured = fmt::format("top-1 agreement with fp32 {:.4f} on {} images", r.agreement, r.checked);
  if (r.agreement < policy.min_agreement())
    return f32(fmt::format("{}, below {:.4f}", measured, policy.min_agreement()));
  r.dtype = torch::kBFloat16;
  r.reason = "bf16: native on this CPU, " + measured;
  return r;
}

torch::Tensor synthetic_check_images(const ModelImpl& model, int64_t size, int64_t count) {
  TORCH_CHECK(size >= 1 && count >= 1, "synthetic_check_images: size and count must be >= 1");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(20261203);
  return torch::randn({count, model.options().in_channels(), size, size}, gen, torch::kFloat);
}

}  // namespace rmnet
