// libbitinc: bit-incremental delivery of neural-network models.
// The one header an application needs.
#pragma once

#include "bitinc/accuracy.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/coder.hpp"
#include "bitinc/coder_benchmark.hpp"
#include "bitinc/dataset.hpp"
#include "bitinc/decoder.hpp"
#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"
#include "bitinc/evaluation.hpp"
#include "bitinc/inputs.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/model.hpp"
#include "bitinc/net.hpp"
#include "bitinc/package.hpp"
#include "bitinc/progressive.hpp"
#include "bitinc/stream.hpp"
#include "bitinc/trust.hpp"
#include "bitinc/version.hpp"
