// The conversion pipeline: pass 1 (reserve + merge, by the family's translator, translate.h),
// then the fusion passes on the chain (fuse.cpp), one build of the PlainNet, verification against
// the source, the cost of both, and the record of it all in the result's metadata.
#include "rmnet/convert/rm.h"

#include <chrono>

#include <fmt/format.h>
#include <torch/torch.h>

#include "chain.h"
#include "rmnet/convert/fuse.h"
#include "translate.h"

namespace rmnet {
using detail::Chain;

namespace {

/// Pass 1 on a chain; a plain model is read as it is.
Chain reserve_merge_chain(const ModelImpl& model, DownsampleMode downsample, bool grouped_reserve) {
  Chain ch;
  detail::WorkDtypeGuard work(detail::dtype_device(model).first);
  detail::TranslateOptions to;
  to.downsample = downsample;
  to.grouped_reserve = grouped_reserve;
  detail::translator_for(model.family())(model, to, ch);
  return ch;
}

PlainNet build_from(const ModelImpl& model, const Chain& ch, DownsampleMode downsample) {
  auto [dtype, device] = detail::dtype_device(model);
  ModelOptions opts = model.options();
  opts.arch("plain");
  auto net = ch.build(opts, dtype, device);
  net->metadata() = model.metadata();
  if (!dynamic_cast<const PlainNetImpl*>(&model)) {
    net->metadata()["source_arch"] = model.options().arch();
    net->metadata()["input_size"] = std::to_string(model.input_size());
    net->metadata()["downsample"] = downsample == DownsampleMode::Type1 ? "1" : "2";
  }
  return net;
}

}  // namespace

PlainNet reserve_merge(const ModelImpl& model, DownsampleMode downsample, bool grouped_reserve) {
  return build_from(model, reserve_merge_chain(model, downsample, grouped_reserve), downsample);
}

ConversionResult convert(const ModelImpl& model, const ConvertOptions& options) {
  ConversionResult result;
  auto clock = std::chrono::steady_clock::now();
  auto lap = [&](std::string name) {
    const auto now = std::chrono::steady_clock::now();
    result.pass_seconds.emplace_back(std::move(name), std::chrono::duration<double>(now - clock).count());
    clock = now;
  };
  const bool from_residual = !dynamic_cast<const PlainNetImpl*>(&model);
  detail::WorkDtypeGuard work(detail::dtype_device(model).first);
  auto ch = reserve_merge_chain(model, options.downsample(), options.grouped_reserve());
  lap(from_residual ? "reserve_merge" : "read");
  if (!options.keep_bn()) {
    ch = detail::fold_batchnorm(ch);
    lap("fold_batchnorm");
    ch = detail::simplify_activations(ch);
    lap("simplify_activations");
    if (options.fuse_pointwise() != PointwiseFusion::Never) {
      ch = detail::fuse_pointwise(ch, options.fuse_pointwise());
      lap("fuse_pointwise(" + to_string(options.fuse_pointwise()) + ")");
    }
  }
  std::string passes;
  for (const auto& [name, secs] : result.pass_seconds)
    if (name != "read") passes += (passes.empty() ? "" : ",") + name;
  auto net = build_from(model, ch, options.downsample());
  lap("build");
  net->metadata()["passes"] = passes;
  net->metadata()["bn"] = options.keep_bn() ? "kept" : "fused";
  if (options.verify()) {
    auto vo = options.verify_options();
    if (vo.input_size() == 0) vo.input_size(default_input_size(model));
    result.report = verify_equivalence(const_cast<ModelImpl&>(model), *net, vo);
    net->metadata()["verify_input_size"] = std::to_string(vo.input_size());
    net->metadata()["verified_max_rel_error"] = fmt::format("{:.3e}", result.report.max_rel_error);
    lap("verify");
  }
  if (options.cost_input_size() >= 0) {
    const int64_t size = options.cost_input_size() > 0   ? options.cost_input_size()
                         : options.verify_options().input_size() > 0 ? options.verify_options().input_size()
                                                                     : default_input_size(model);
    const int64_t channels = model.options().in_channels();
    result.cost_input_size = size;
    result.cost_before = profile_model(const_cast<ModelImpl&>(model), channels, size);
    result.cost_after = profile_model(*net, channels, size);
    auto& md = net->metadata();
    md["cost.input_size"] = std::to_string(size);
    md["cost.flops_before"] = std::to_string(result.cost_before.flops);
    md["cost.flops_after"] = std::to_string(result.cost_after.flops);
    md["cost.params_before"] = std::to_string(result.cost_before.params);
    md["cost.params_after"] = std::to_string(result.cost_after.params);
    lap("cost");
  }
  result.plain = net;
  return result;
}

}  // namespace rmnet
