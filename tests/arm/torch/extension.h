// Stand-in for torch/extension.h when the kernels are built into a plain C++ program (the
// ARM check, check_kernels.cpp): they need ATen and the operator registry, not Python.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>
namespace torch { using namespace at; }
#define PYBIND11_MODULE(name, m) [[maybe_unused]] static void unused_python_module(int m)
