// Precompiled header shared by librmnet, the CLI and the tests (see CMakeLists.txt).
#pragma once
#include <torch/torch.h>
#include <fmt/format.h>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>
