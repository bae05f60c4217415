// HTTP delivery, both sides: the device's fetcher (bitinc/fetch.hpp) and
// the lab's package server with link emulation and faults
// (bitinc/server.hpp). Kept for callers that include it; new code includes
// what it uses, or an audience's header (device.hpp, lab.hpp).
#pragma once

#include "bitinc/fetch.hpp"
#include "bitinc/server.hpp"
