// The lab's headers (lab component, bitinc::lab): the package server with
// link emulation and faults (bitinc/server.hpp), the 3GPP evaluation and its
// scenarios, other coders' benchmarks, streams of inputs and accuracy
// measurement — on top of the producer's and the device's.
#pragma once

#include "bitinc/accuracy.hpp"
#include "bitinc/coder.hpp"
#include "bitinc/coder_benchmark.hpp"
#include "bitinc/engine.hpp"
#include "bitinc/evaluation.hpp"
#include "bitinc/inputs.hpp"
#include "bitinc/producer.hpp"
#include "bitinc/progressive.hpp"
#include "bitinc/server.hpp"
#include "bitinc/stream.hpp"
