// train_fashion [--data DIR] [--arch NAME] [--epochs N] [--train-samples N] [--test-samples N] [--out DIR]
// Trains a small ResNet on Fashion-MNIST with rmnet::fit (Ctrl-C stops it with a resumable
// checkpoint), converts it to an equivalent plain network (RM operation, BN folded) and evaluates
// the residual and the plain network on the test split: the same accuracy (up to float rounding),
// from a network without residual connections. Defaults are small enough for a quick look: 2048 training images, 1 epoch.
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include <rmnet/convert/rm.h>
#include <rmnet/core.h>
#include <rmnet/data/datasets.h>
#include <rmnet/io/model_file.h>
#include <rmnet/models/registry.h>
#include <rmnet/train/fit.h>

namespace {
std::atomic<bool> g_stop{false};
}

int main(int argc, char** argv) {
  std::string data, arch = "resnet8", out = "train_fashion_run";
  int64_t epochs = 1, train_samples = 2048, test_samples = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--data") data = v;
    else if (a == "--arch") arch = v;
    else if (a == "--epochs") epochs = std::atoll(v.c_str());
    else if (a == "--train-samples") train_samples = std::atoll(v.c_str());
    else if (a == "--test-samples") test_samples = std::atoll(v.c_str());
    else if (a == "--out") out = v;
    else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::cerr << "usage: train_fashion [--data DIR] [--arch NAME] [--epochs N] [--train-samples N] "
                 "[--test-samples N] [--out DIR]\n";
    return 2;
  }
  try {
    // Data: the IDX files (Debian's fashion-mnist package when --data is not given), a prefix of each split.
    auto train = std::make_shared<rmnet::Subset>(rmnet::open_dataset("fashion-mnist", data, true),
                                                        static_cast<size_t>(train_samples));
    auto test = std::make_shared<rmnet::Subset>(rmnet::open_dataset("fashion-mnist", data, false),
                                                       static_cast<size_t>(test_samples));

    // A residual network whose blocks track their input statistics (for the conversion).
    torch::manual_seed(0);
    auto model = rmnet::create_model(rmnet::ModelOptions(arch).num_classes(10).in_channels(1).track_block_stats(true));
    rmnet::preprocess_for("fashion-mnist", *test).to_metadata(model->metadata());  // for rmnet::Classifier

    rmnet::FitOptions fo;
    fo.epochs(epochs).batch_size(64).workers(1).out(out);
    fo.train_transform(rmnet::train_transform("fashion-mnist")).test_transform(rmnet::eval_transform("fashion-mnist"));
    fo.train().schedule().lr(0.05);
    fo.on_epoch([](const rmnet::EpochRecord& r) {
      std::cout << "epoch " << r.epoch << ": train loss " << r.train.loss << ", test top-1 " << 100 * r.test.top1
                << "%" << std::endl;
    });
    std::signal(SIGINT, [](int) { g_stop = true; });
    fo.stop([] { return g_stop.load(); });
    const auto result = rmnet::fit(*model, train, test, fo);
    if (result.stopped) {
      std::cout << "stopped; resume from " << result.checkpoint << std::endl;
      return 130;
    }

    // The RM operation: an equivalent network without residual connections, verified on the way.
    auto conv = rmnet::convert(*model);
    std::cout << "converted: " << conv.report.to_string() << std::endl;
    if (!conv.report.passed) return 1;
    rmnet::save_model(*conv.net, out + "/plain.rmnet");

    rmnet::DataLoader loader(test, rmnet::eval_transform("fashion-mnist"), rmnet::LoaderOptions().batch_size(256).shuffle(false));
    const auto residual = rmnet::evaluate(*model, loader), plain = rmnet::evaluate(*conv.net, loader);
    std::cout << "test top-1: residual " << 100 * residual.top1 << "%, plain " << 100 * plain.top1 << "% on "
              << plain.samples << " images; wrote " << out << "/final.rmnet and " << out << "/plain.rmnet" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "train_fashion: " << rmnet::error_message(e) << std::endl;
    return 1;
  }
}
