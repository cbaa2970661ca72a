// The conversion pipeline: pass 1 (reserve + merge, by the family's translator, translate.h),
// then the fusion passes on the chain (fuse.cpp), one build of the PlainNet, verification against
// the source, the cost of both, and the record of it all in the result's metadata.
#include "rmnet/convert/rm.h"

#include <chrono>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/ir/chain.h"
#include "rmnet/convert/fuse.h"
#include "rmnet/models/registry.h"
#include "translate.h"

namespace rmnet {
using ir::Chain;

namespace {

/// Pass 1 on a chain; a plain model is read as it is.
Chain reserve_merge_chain(const ModelImpl& model, DownsampleMode downsample, bool grouped_reserve) {
  Chain ch;
  ch.name_modules(model);
  ir::WorkDtypeGuard work(ir::dtype_device(model).first);
  detail::TranslateOptions to;
  to.downsample = downsample;
  to.grouped_reserve = grouped_reserve;
  detail::translator_for(model.family())(model, to, ch);
  return ch;
}

/// A float64 copy of a model: same architecture (options; the layer list of a plain network),
/// weights, statistics, metadata, device and training flag.
PlainNet build_from(const ModelImpl& model, const Chain& ch, DownsampleMode downsample) {
  auto [dtype, device] = ir::dtype_device(model);
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

ConversionResult convert(const ModelImpl& model_in, const ConvertOptions& options) {
  ConversionResult result;
  ir::PassLog log;
  // A source in float32 (or half) is converted and checked in float64: the check then measures the
  // conversion, not float32, which cannot resolve an ill-conditioned network (large activations);
  // the result is written back in the source's dtype.
  const auto model_dtype = ir::dtype_device(model_in).first;
  const bool widen = model_dtype != torch::kDouble && c10::isFloatingType(model_dtype) &&
                     detail::has_translator(model_in.family());
  const ModelPtr wide = widen ? model_in.clone_model(torch::kDouble) : nullptr;
  const ModelImpl& model = widen ? *wide : model_in;
  if (widen) log.lap("float64_copy");
  const bool from_residual = !dynamic_cast<const PlainNetImpl*>(&model);
  ir::WorkDtypeGuard work(ir::dtype_device(model).first);
  auto ch = reserve_merge_chain(model, options.downsample(), options.grouped_reserve());
  if (from_residual)
    log.lap("reserve_merge", ir::PassRecord::Kind::Transform);
  else
    log.lap("read");
  if (!options.keep_bn()) {
    std::vector<ir::Pass> passes{ir::fold_batchnorm_pass(), ir::simplify_activations_pass()};
    if (options.fuse_pointwise() != PointwiseFusion::Never) passes.push_back(ir::fuse_pointwise_pass(options.fuse_pointwise()));
    ch = log.run(passes, std::move(ch));
  }
  const std::string passes = log.transforms();
  auto net = build_from(model, ch, options.downsample());
  log.lap("build");
  net->metadata()["passes"] = passes;
  net->metadata()["bn"] = options.keep_bn() ? "kept" : "fused";
  VerifyOptions vo = options.verify_options();
  if (vo.input_size() == 0) vo.input_size(default_input_size(model));
  // The float64 check of a float32 source: 1e-6 by default, four orders below float32's tolerance
  // and far above float64 rounding even in networks float32 cannot resolve (there float64's own
  // rounding reaches 1e-8: an ill-conditioned MobileNetV2 whose float32 self-deviation is 5%).
  if (widen && vo.tolerance() <= 0) vo.tolerance(1e-6);
  if (options.verify()) {
    result.report = verify_equivalence(const_cast<ModelImpl&>(model), *net, vo);
    net->metadata()["verify_input_size"] = std::to_string(vo.input_size());
    net->metadata()["verified_max_rel_error"] = fmt::format("{:.3e}", result.report.max_rel_error);
  }
  if (widen) net->to(model_dtype);
  if (options.verify()) {
    if (widen) {
      // the figures in the model's dtype, for the record: the result against the source, and the
      // source against its own float64 copy (what that dtype can resolve on these inputs)
      auto& r = result.report;
      VerifyOptions v = vo;
      v.tolerance(1.0);
      r.model_dtype = model_dtype == torch::kFloat ? "float32" : c10::toString(model_dtype);
      r.model_dtype_rel_error = verify_equivalence(const_cast<ModelImpl&>(model_in), *net, v).max_rel_error;
      r.source_dtype_rel_error = verify_equivalence(*wide, const_cast<ModelImpl&>(model_in), v).max_rel_error;
      net->metadata()["model_dtype_rel_error"] = fmt::format("{:.3e}", r.model_dtype_rel_error);
      net->metadata()["source_dtype_rel_error"] = fmt::format("{:.3e}", r.source_dtype_rel_error);
    }
    log.lap("verify");
  }
  if (options.cost_input_size() >= 0) {
    const int64_t size = options.cost_input_size() > 0   ? options.cost_input_size()
                         : options.verify_options().input_size() > 0 ? options.verify_options().input_size()
                                                                     : default_input_size(model_in);
    const int64_t channels = model_in.options().in_channels();
    result.cost_input_size = size;
    result.cost_before = profile_model(const_cast<ModelImpl&>(model_in), channels, size);
    result.cost_after = profile_model(*net, channels, size);
    auto& md = net->metadata();
    md["cost.input_size"] = std::to_string(size);
    md["cost.flops_before"] = std::to_string(result.cost_before.flops);
    md["cost.flops_after"] = std::to_string(result.cost_after.flops);
    md["cost.params_before"] = std::to_string(result.cost_before.params);
    md["cost.params_after"] = std::to_string(result.cost_after.params);
    log.lap("cost");
  }
  result.net = result.plain = net;
  result.passes = log.records();
  result.pass_seconds = ir::pass_seconds(result.passes);
  return result;
}

}  // namespace rmnet
