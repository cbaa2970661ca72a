// Compress to a target: convert -> (prune -> distilled fine-tune) x rounds -> [INT8] -> report. See
// include/rmnet/compress/compress.h.
#include "rmnet/compress/compress.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/data/loader.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/latency.h"

namespace rmnet {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_options(const CompressOptions& o) {
  const int targets = (o.target_macs() >= 0) + (o.target_latency_ms() >= 0) + (o.target_speedup() >= 0);
  TORCH_CHECK(targets == 1, "give exactly one of target_macs, target_latency_ms or target_speedup (got ",
              o.target_macs(), ", ", o.target_latency_ms(), ", ", o.target_speedup(), ")");
  TORCH_CHECK(o.target_macs() < 0 || (o.target_macs() > 0 && o.target_macs() <= 1.0),
              "target_macs must be in (0, 1] (got ", o.target_macs(), ")");
  TORCH_CHECK(o.target_latency_ms() < 0 || (o.target_latency_ms() > 0 && std::isfinite(o.target_latency_ms())),
              "target_latency_ms must be a positive number (got ", o.target_latency_ms(), ")");
  TORCH_CHECK(o.target_speedup() < 0 || (o.target_speedup() >= 1.0 && std::isfinite(o.target_speedup())),
              "target_speedup must be at least 1 (got ", o.target_speedup(), ")");
  TORCH_CHECK(o.rounds() >= 1 && o.rounds() <= 100, "rounds must be in [1, 100] (got ", o.rounds(), ")");
  TORCH_CHECK(o.finetune_epochs() >= 0, "finetune_epochs must be non-negative (got ", o.finetune_epochs(), ")");
  TORCH_CHECK(o.calibration_images() >= 1, "calibration_images must be at least 1 (got ", o.calibration_images(), ")");
  TORCH_CHECK(o.bench_batch() >= 1 && o.bench_iters() >= 1, "bench_batch and bench_iters must be at least 1");
  TORCH_CHECK(o.out().empty() || !fs::exists(o.out()), "the output folder '", o.out(),
              "' exists: compress writes a new folder (choose another name or remove it)");
}

Transform test_transform_of(const CompressOptions& o, int64_t channels) {
  if (o.finetune().test_transform()) return o.finetune().test_transform();
  return normalize(Normalization{std::vector<double>(channels, 0.5), std::vector<double>(channels, 0.5)});
}

double top1_of(const ModelPtr& runner, const DatasetPtr& test, const Transform& t, int64_t workers) {
  DataLoader loader(test, t, LoaderOptions().batch_size(256).shuffle(false).workers(workers));
  return evaluate(*runner, loader).top1;
}

nlohmann::json to_json(const CompressStep& s) {
  return {{"name", s.name}, {"runtime", s.runtime}, {"file", s.file}, {"macs", s.macs}, {"params", s.params},
          {"executed_macs", s.executed_macs}, {"shortcuts", s.shortcuts},
          {"images_per_second", s.images_per_second}, {"latency_ms", s.latency_ms}, {"top1", s.top1},
          {"target", s.target}, {"seconds", s.seconds}};
}

/// A deep copy through the model file format (models are not Cloneable).
ModelPtr copy_of(const ModelImpl& m) {
  auto c = deserialize_model(serialize_model(m), "copy");
  c->train(m.is_training());
  return c;
}

/// Removes a partial output folder unless released (a failed run leaves nothing).
struct PartialDir {
  fs::path path;
  bool keep = false;
  ~PartialDir() {
    if (!keep && !path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

}  // namespace

CompressResult compress(const ModelImpl& trained, const DatasetPtr& train, const DatasetPtr& test,
                        const CompressOptions& o) {
  check_options(o);
  TORCH_CHECK(train && test && train->size() > 0 && test->size() > 0, "compress needs non-empty training and test sets");
  TORCH_CHECK(train->channels() == trained.options().in_channels(), "the network takes ",
              trained.options().in_channels(), " input channels, the data set has ", train->channels());
  const auto log = [&](const std::string& line) {
    if (o.log()) o.log()(line);
  };
  PartialDir partial;
  if (!o.out().empty()) {
    partial.path = fs::path(o.out()).lexically_normal().string() + fmt::format(".partial-{}", ::getpid());
    fs::remove_all(partial.path);
    fs::create_directories(partial.path);
  }
  const auto save = [&](const ModelImpl& m, const std::string& name) -> std::string {
    if (partial.path.empty()) return "";
    save_model(m, (partial.path / name).string());
    return name;
  };

  const int64_t cin = trained.options().in_channels();
  const auto eval_t = test_transform_of(o, cin);
  const int64_t workers = o.finetune().workers();
  CompressResult result;

  // the trained model as it is and its plain form (BN kept, verified)
  auto t0 = std::chrono::steady_clock::now();
  const auto* as_plain = dynamic_cast<const PlainNetImpl*>(&trained);
  PlainNet converted{nullptr};
  if (as_plain) {
    converted = PlainNet(std::dynamic_pointer_cast<PlainNetImpl>(copy_of(*as_plain)));
    TORCH_CHECK(converted, "internal: a plain network cloned to another type");
  } else {
    auto cr = convert(trained, ConvertOptions().keep_bn(true));
    TORCH_CHECK(cr.report.passed, "the conversion of the trained model is not equivalent: ", cr.report.to_string());
    converted = cr.net;
  }
  converted->eval();
  // sizes from the data as the network sees it (the test transform of one image)
  int64_t size = o.prune().input_size();
  if (size <= 0) {
    Rng rng(0);
    size = eval_t(test->get(0).image, rng).size(-1);
  }
  auto lo = o.prune().latency();
  if (lo.input_size() == 0) lo.input_size(size);
  BenchOptions bo;
  bo.batch(o.bench_batch()).input_size(size).iters(o.bench_iters()).warmup(std::max<int64_t>(1, o.bench_iters() / 2));
  // `shortcuts_of`: the float network whose Dirac shortcuts the measured one runs (the INT8 step's)
  const auto measure = [&](const ModelPtr& m, CompressStep& s, Runtime runtime, const CompressStep* shortcuts_of = nullptr) {
    BenchOptions b_opts = bo;
    auto b = benchmark(m, s.name, b_opts.runtime(runtime));
    s.runtime = b.runtime;
    s.images_per_second = b.images_per_second;
    s.latency_ms = b.latency_p50_ms;
    s.macs = count_flops(*m, cin, size);
    s.params = count_parameters(*m);
    s.executed_macs = s.macs;
    if (const auto* plain = dynamic_cast<const PlainNetImpl*>(m.get())) {
      const auto sc = dirac_shortcuts(*plain);
      s.shortcuts = static_cast<int64_t>(sc.size());
      s.executed_macs = executed_macs(*plain, sc, size);
    }
    if (shortcuts_of) {
      s.executed_macs = shortcuts_of->executed_macs;
      s.shortcuts = shortcuts_of->shortcuts;
    }
    s.top1 = top1_of(prepare_inference(m, runtime), test, eval_t, workers);
    log(fmt::format("{:<10} top-1 {:.2f}%  {:.0f} images/s ({}, batch {})  MACs {} (executed {})  params {}", s.name,
                    100 * s.top1, s.images_per_second, s.runtime, o.bench_batch(), s.macs, s.executed_macs, s.params));
  };
  {
    // the original: a residual model runs eagerly (the deploy runtimes execute plain chains)
    CompressStep s;
    s.name = "original";
    auto copy = copy_of(trained);
    copy->eval();
    measure(copy, s, as_plain ? lo.runtime() : Runtime::Auto);
    result.steps.push_back(s);
  }
  {
    CompressStep s;
    s.name = "converted";
    measure(converted.ptr(), s, lo.runtime());
    s.seconds = seconds_since(t0);
    s.file = save(*converted, "converted.rmnet");
    result.steps.push_back(s);
  }
  // MACs as the rounds count them: executed by the runtime (keep_shortcuts) or the plain form's
  const bool exec = o.keep_shortcuts();
  const auto macs_of = [&](const PlainNetImpl& n) {
    return static_cast<double>(exec ? executed_macs(n, size) : count_flops(const_cast<PlainNetImpl&>(n), cin, size));
  };
  const double macs_orig = static_cast<double>(result.steps[0].macs);
  const double macs_conv = macs_of(*converted);

  // the final target, and the rounds' geometric steps towards it
  double latency_conv = 0.0, latency_final = 0.0;
  if (o.target_latency_ms() >= 0 || o.target_speedup() >= 0) {
    latency_conv = measure_latency_ms(*converted, lo);
    latency_final = o.target_latency_ms() >= 0 ? o.target_latency_ms() : latency_conv / o.target_speedup();
    log(fmt::format("latency target {:.4g} ms per batch of {} (the converted network: {:.4g} ms on {})", latency_final,
                    lo.batch(), latency_conv, to_string(lo.runtime())));
  }
  torch::Tensor calibration;
  if (o.prune().reconstruct() || o.prune().importance() == PruneImportance::Measured || o.int8())
    calibration = calibration_images(*train, eval_t, o.calibration_images(), o.calibration_seed());

  ModelPtr teacher;
  if (o.distill() && o.finetune_epochs() > 0) {
    auto frozen = copy_of(*converted);
    frozen->eval();
    teacher = prepare_inference(frozen, Runtime::Auto);
  }

  PlainNet current = converted;
  for (int64_t r = 1; r <= o.rounds(); ++r) {
    t0 = std::chrono::steady_clock::now();
    const double f = static_cast<double>(r) / static_cast<double>(o.rounds());
    PruneOptions po = o.prune();
    po.threshold(-1).ratio(-1).target_macs(-1).target_params(-1).target_latency_ms(-1).target_speedup(-1).latency(lo);
    po.input_size(size);
    if (exec) po.executed_macs(true).reconstruct_keep_dirac(true);
    CompressStep s;
    s.name = fmt::format("round {}", r);
    const double cur_macs = macs_of(*current);
    if (o.target_macs() >= 0) {
      const double goal = macs_conv * std::pow(std::min(1.0, o.target_macs() * macs_orig / macs_conv), f);
      s.target = std::min(1.0, goal / cur_macs);
      po.target_macs(s.target);
    } else {
      s.target = latency_conv * std::pow(latency_final / latency_conv, f);
      po.target_latency_ms(s.target);
    }
    auto pr = prune(*current, po, calibration);
    log(fmt::format("{}: {}", s.name, pr.report.to_string()));
    PlainNet next = pr.net;
    if (o.finetune_epochs() > 0) {
      FitOptions fo = o.finetune();
      fo.epochs(o.finetune_epochs()).out("").resume("");
      if (exec) fo.train().keep_dirac(true);
      if (teacher) fo.teacher(teacher);
      fit(*next, train, test, fo);
    }
    next->eval();
    measure(next.ptr(), s, lo.runtime());
    s.seconds = seconds_since(t0);
    s.file = save(*next, fmt::format("round_{}.rmnet", r));
    result.steps.push_back(s);
    current = next;
  }
  result.net = current.ptr();
  if (o.int8()) {
    t0 = std::chrono::steady_clock::now();
    auto q = quantize(*current, calibration, o.quantize());
    CompressStep s;
    s.name = "int8";
    measure(q.net.ptr(), s, Runtime::Auto, &result.steps.back());  // the INT8 executor: the float network's shortcuts
    s.seconds = seconds_since(t0);
    s.file = save(*q.net, "int8.rmnet");
    result.steps.push_back(s);
    result.net = q.net.ptr();
  }

  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : result.steps) steps.push_back(to_json(s));
  nlohmann::json target = o.target_macs() >= 0 ? nlohmann::json{{"macs", o.target_macs()}, {"macs_per_image", o.target_macs() * macs_orig}}
                          : o.target_latency_ms() >= 0 ? nlohmann::json{{"latency_ms", o.target_latency_ms()}}
                                                       : nlohmann::json{{"speedup", o.target_speedup()}, {"latency_ms", latency_final}};
  nlohmann::json report = {
      {"target", target},
      {"rounds", o.rounds()},
      {"finetune_epochs", o.finetune_epochs()},
      {"distill", o.distill() && o.finetune_epochs() > 0},
      {"distill_weight", o.finetune().distill_weight()},
      {"distill_temperature", o.finetune().distill_temperature()},
      {"int8", o.int8()},
      {"importance", to_string(o.prune().importance())},
      {"grouping", to_string(o.prune().grouping())},
      {"group_reduction", to_string(o.prune().group_reduction())},
      {"per_cost", o.prune().per_cost()},
      {"reconstruct", o.prune().reconstruct()},
      {"keep_shortcuts", o.keep_shortcuts()},
      {"batch", o.bench_batch()},
      {"input_size", size},
      {"runtime", to_string(lo.runtime())},
      {"threads", at::get_num_threads()},
      {"steps", steps}};
  result.report_json = report.dump(2) + "\n";
  if (!partial.path.empty()) {
    write_file_atomic((partial.path / "report.json").string(), result.report_json);
    const bool plotted = plot_compress(result.steps, (partial.path / "accuracy_vs_speed.png").string(),
                                       fmt::format("{}: top-1 vs images/s (batch {}, {} threads)",
                                                   trained.options().arch(), o.bench_batch(), at::get_num_threads()));
    if (!plotted) log("built without OpenCV: no accuracy_vs_speed.png");
    TORCH_CHECK(!fs::exists(o.out()), "the output folder '", o.out(), "' appeared while compressing; the result is in ",
                partial.path.string());
    fs::rename(partial.path, o.out());
    partial.keep = true;
    log(fmt::format("wrote {}/report.json", o.out()));
  }
  return result;
}

}  // namespace rmnet
