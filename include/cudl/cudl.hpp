// cudl/cudl.hpp — the whole public API in one include.
#pragma once

#include "cudl/callbacks.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/data.hpp"
#include "cudl/device.hpp"
#include "cudl/distributed.hpp"
#include "cudl/dtype.hpp"
#include "cudl/error.hpp"
#include "cudl/export.hpp"
#include "cudl/interop.hpp"
#include "cudl/model.hpp"
#include "cudl/nn.hpp"
#include "cudl/memory.hpp"
#include "cudl/shape.hpp"
#include "cudl/tensor.hpp"
#include "cudl/version.hpp"
