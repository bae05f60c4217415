// The producer's headers (encode component, bitinc::encode, and signing in
// the fetch component): packing models and weights into packages, the
// ladder, calibration on training images, mixed precision, keys and
// signatures. A producer also reads packages back: it has the device's
// headers too.
#pragma once

#include "bitinc/calibration.hpp"
#include "bitinc/dataset.hpp"
#include "bitinc/device.hpp"
#include "bitinc/pack.hpp"
#include "bitinc/trust.hpp"
