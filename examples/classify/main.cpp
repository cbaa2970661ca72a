// classify MODEL [--labels FILE] [--top K] IMAGE...
// Prints the top-k classes of each image with their probabilities, using the preprocessing
// stored in the model file (residual or converted plain network).
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include <rmnet/core.h>
#include <rmnet/infer/classifier.h>

int main(int argc, char** argv) {
  std::string model, labels;
  int64_t top = 5;
  std::vector<std::string> images;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--labels" && i + 1 < argc) labels = argv[++i];
    else if (a == "--top" && i + 1 < argc) top = std::atoll(argv[++i]);
    else if (model.empty()) model = a;
    else images.push_back(a);
  }
  if (model.empty() || images.empty()) {
    std::cerr << "usage: classify MODEL [--labels FILE] [--top K] IMAGE...\n";
    return 2;
  }
  try {
    rmnet::Classifier classifier(model, rmnet::ClassifierOptions().labels(labels));
    auto results = classifier.classify_files(images, top);
    for (size_t i = 0; i < images.size(); ++i) {
      std::cout << images[i] << ":";
      for (const auto& p : results[i])
        std::cout << "  " << (p.label.empty() ? std::to_string(p.index) : p.label) << " " << std::fixed
                  << std::setprecision(4) << p.score;
      std::cout << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "classify: " << rmnet::error_message(e) << "\n";
    return 1;
  }
  return 0;
}
