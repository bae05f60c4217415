// The Python module's native part (bitinc._native), on the library's public
// API: packing, unpacking to numpy arrays, verifying, fetching with a
// progress callback, and keys for signed packages. python/bitinc/__init__.py
// wraps it with keyword defaults and docstrings.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <bitinc/bitinc.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// The model's weights as {name: numpy.float32 array of the tensor's shape}.
// Each array owns its tensor's values (moved, not copied).
py::dict weights_of(bitinc::Model&& model) {
    py::dict weights;
    for (bitinc::Tensor& tensor : model.weights) {
        auto values = std::make_unique<std::vector<float>>(std::move(tensor.values));
        float* data = values->data();
        const py::capsule owner(values.get(), [](void* pointer) {
            delete static_cast<std::vector<float>*>(pointer);  // the capsule owns it
        });
        values.release();
        std::vector<py::ssize_t> shape(tensor.shape.begin(), tensor.shape.end());
        weights[py::str(tensor.name)] = py::array_t<float>(shape, data, owner);
    }
    return weights;
}

// The package's model at `rung` (bits; none: the ladder's last rung),
// rebuilt without holding the GIL.
bitinc::Model unpacked(const std::filesystem::path& package, std::optional<int> rung, bool direct) {
    const int bits = rung.value_or(bitinc::read_manifest(package).last_rung_bits());
    const py::gil_scoped_release unlocked;
    return bitinc::unpack_package(package, bits, direct);
}

py::dict summary_of(const bitinc::Manifest& manifest) {
    py::list rungs;
    for (const bitinc::RungEntry& rung : manifest.rungs) {
        py::dict entry;
        entry["kind"] = std::string(bitinc::rung_kind_name(rung.kind));
        entry["bits"] = rung.bits;
        entry["parent_bits"] = rung.parent_bits;
        entry["file"] = rung.data.file;
        entry["bytes"] = rung.data.bytes;
        entry["units"] = rung.units.size();
        rungs.append(entry);
    }
    py::dict summary;
    summary["model"] = manifest.model_name;
    summary["parameters"] = manifest.parameters;
    summary["float32_bytes"] = manifest.float32_bytes;
    summary["ladder"] = manifest.ladder.bits;
    summary["exact_rung"] = manifest.ladder.exact_top;
    summary["per_channel"] = manifest.ladder.per_channel;
    summary["rungs"] = rungs;
    py::list deltas;
    for (const bitinc::DeltaEntry& delta : manifest.deltas) {
        deltas.append(py::dict(py::arg("bits") = delta.bits, py::arg("file") = delta.data.file,
                               py::arg("bytes") = delta.data.bytes,
                               py::arg("units") = delta.units.size(),
                               py::arg("from_weights_sha256") = delta.from.weights_sha256,
                               py::arg("from_release") = delta.from.release));
    }
    summary["deltas"] = deltas;
    summary["topology_file"] = manifest.topology.file;
    if (const auto& point = manifest.accuracy_point) {
        // The rung holding the point is an index into "rungs".
        summary["accuracy_point"] = py::dict(
            py::arg("rung") = point->rung, py::arg("units") = point->units,
            py::arg("bytes") = manifest.accuracy_point_bytes(), py::arg("metric") = point->metric,
            py::arg("value") = point->value, py::arg("top_value") = point->top_value,
            py::arg("tolerance") = point->tolerance,
            py::arg("calibration_images") = point->calibration_images);
    }
    if (manifest.release) {
        summary["release"] = py::dict(py::arg("model_id") = manifest.release->model_id,
                                      py::arg("number") = manifest.release->number);
    }
    return summary;
}

// settings: {"images", "sensitivity_images", "tolerance", "data_dir"}, the
// images calibration (when `calibrate`) and the budget (when given) run on;
// budget: pack --budget's text or None.
bitinc::PackOptions pack_options(const std::string& ladder, bool per_channel, bool force,
                                 int threads, const std::optional<std::string>& sign_key,
                                 std::optional<std::uint64_t> release, const std::string& model_id,
                                 const py::dict& settings, bool calibrate,
                                 const std::optional<std::string>& budget) {
    bitinc::PackOptions options;
    options.ladder = bitinc::LadderPlan::parse(ladder);
    options.ladder.per_channel = per_channel;
    options.replace = force;
    options.threads = threads;
    bitinc::PackCalibration calibration;
    if (settings.contains("images")) calibration.images = settings["images"].cast<std::size_t>();
    if (settings.contains("sensitivity_images"))
        calibration.sensitivity_images = settings["sensitivity_images"].cast<std::size_t>();
    if (settings.contains("point_images"))
        calibration.point_images = settings["point_images"].cast<std::size_t>();
    if (settings.contains("tolerance"))
        calibration.tolerance_points = settings["tolerance"].cast<double>();
    if (settings.contains("data_dir"))
        calibration.data_dir = settings["data_dir"].cast<std::string>();
    calibration.engine_threads = threads;
    if (calibrate) options.calibration = calibration;
    if (budget) {
        bitinc::PackBudget parsed = bitinc::parse_pack_budget(*budget);
        parsed.calibration = calibration;
        options.budget = std::move(parsed);
    }
    if (sign_key) {
        bitinc::PackOptions::Signing signing;
        signing.private_key_pem = *sign_key;
        signing.model_id = model_id;
        signing.release = release.value_or(1);
        options.signing = std::move(signing);
    }
    return options;
}

py::dict pack_summary(const bitinc::PackResult& result) {
    py::dict summary = summary_of(result.manifest);
    summary["warnings"] = result.warnings;
    summary["notes"] = result.notes;
    summary["seconds"] = result.seconds;
    return summary;
}

}  // namespace

PYBIND11_MODULE(_native, module) {
    module.doc() = "bitinc's native part; use the bitinc package";
    // bitinc.Error: the library's errors (bad input, damaged or untrusted
    // packages, failed downloads), with .code the ErrorCode's name; an Error
    // raised in Python without one says invalid_argument, as Error(message)
    // does in C++. Out of memory stays pybind11's MemoryError.
    static py::exception<bitinc::Error> error(module, "Error", PyExc_RuntimeError);
    error.attr("code") = bitinc::error_code_name(bitinc::ErrorCode::invalid_argument);
    py::register_exception_translator([](std::exception_ptr pointer) {
        try {
            if (pointer) std::rethrow_exception(pointer);
        } catch (const bitinc::Error& caught) {
            const py::object instance = py::reinterpret_borrow<py::object>(error)(caught.what());
            instance.attr("code") = bitinc::error_code_name(caught.code());
            PyErr_SetObject(error.ptr(), instance.ptr());
        }
    });
    module.attr("version") = std::string(bitinc::version());

    module.def(
        "pack",
        [](const std::filesystem::path& model, const std::filesystem::path& output,
           const std::optional<std::string>& ladder, bool per_channel, bool force, int threads,
           const std::optional<std::string>& sign_key, std::optional<std::uint64_t> release,
           const std::string& model_id, const py::dict& settings, bool calibrate,
           const std::optional<std::string>& budget,
           const std::optional<std::filesystem::path>& previous) {
            bitinc::PackOptions options =
                pack_options(ladder.value_or("8,16"), per_channel, force, threads, sign_key,
                             release, model_id, settings, calibrate, budget);
            if (previous) {
                // The earlier version's ladder unless another is given.
                options.previous_package = *previous;
                if (!ladder) options.ladder = bitinc::read_manifest(*previous).ladder;
            }
            bitinc::PackResult result;
            {
                const py::gil_scoped_release unlocked;
                result = bitinc::pack_model(model, options, output);
            }
            return pack_summary(result);
        },
        py::arg("model"), py::arg("output"), py::arg("ladder"), py::arg("per_channel"),
        py::arg("force"), py::arg("threads"), py::arg("sign_key"), py::arg("release"),
        py::arg("model_id"), py::arg("settings"), py::arg("calibrate"), py::arg("budget"),
        py::arg("previous"));

    // Weights with no graph: (name, float32 array, stored type) triples.
    module.def(
        "pack_weights",
        [](const std::vector<std::tuple<
               std::string, py::array_t<float, py::array::c_style | py::array::forcecast>,
               std::string>>& items,
           const std::filesystem::path& output, const std::string& model_name,
           const std::string& ladder, bool per_channel, bool force, int threads,
           const std::optional<std::string>& sign_key, std::optional<std::uint64_t> release,
           const std::string& model_id) {
            std::vector<bitinc::Tensor> weights;
            for (const auto& [name, array, stored] : items) {
                bitinc::Tensor tensor;
                tensor.name = name;
                tensor.shape.assign(array.shape(), array.shape() + array.ndim());
                tensor.values.assign(array.data(), array.data() + array.size());
                const auto type = bitinc::stored_type_from_name(stored);
                if (!type)
                    throw bitinc::Error(bitinc::ErrorCode::invalid_argument,
                                        "weights: '" + stored + "' is not a float type");
                tensor.stored_as = *type;
                weights.push_back(std::move(tensor));
            }
            // No graph, nothing to run on images: no calibration or budget.
            bitinc::PackOptions options =
                pack_options(ladder, per_channel, force, threads, sign_key, release, model_id,
                             py::dict(), false, std::nullopt);
            bitinc::PackResult result;
            {
                const py::gil_scoped_release unlocked;
                result = bitinc::pack_weights(std::move(weights), options, output, model_name);
            }
            return pack_summary(result);
        },
        py::arg("weights"), py::arg("output"), py::arg("model_name"), py::arg("ladder"),
        py::arg("per_channel"), py::arg("force"), py::arg("threads"), py::arg("sign_key"),
        py::arg("release"), py::arg("model_id"));

    // An ONNX file's float weights and its metadata_props.
    module.def("read_onnx", [](const std::filesystem::path& path) {
        bitinc::Model model;
        {
            const py::gil_scoped_release unlocked;
            model = bitinc::read_onnx_file(path);
        }
        py::dict result;
        result["metadata"] = model.metadata;
        py::list order;
        for (const bitinc::Tensor& tensor : model.weights) order.append(tensor.name);
        result["order"] = order;
        result["weights"] = weights_of(std::move(model));
        return result;
    });

    // An ONNX file with some weights replaced (by name, same shapes), written
    // to `output`: a model whose graph is the template's.
    module.def(
        "write_onnx",
        [](const std::filesystem::path& template_path,
           const std::map<std::string,
                          py::array_t<float, py::array::c_style | py::array::forcecast>>& weights,
           const std::filesystem::path& output) {
            bitinc::Model model = bitinc::read_onnx_file(template_path);
            std::size_t replaced = 0;
            for (bitinc::Tensor& tensor : model.weights) {
                const auto found = weights.find(tensor.name);
                if (found == weights.end()) continue;
                const auto& array = found->second;
                if (std::size_t(array.size()) != tensor.values.size())
                    throw bitinc::Error(bitinc::ErrorCode::invalid_argument,
                                        "write_onnx: '" + tensor.name + "' has " +
                                            std::to_string(array.size()) + " values, the model " +
                                            std::to_string(tensor.values.size()));
                tensor.values.assign(array.data(), array.data() + array.size());
                ++replaced;
            }
            if (replaced != weights.size())
                throw bitinc::Error(bitinc::ErrorCode::invalid_argument,
                                    "write_onnx: " + std::to_string(weights.size() - replaced) +
                                        " of the weights name no tensor of " +
                                        template_path.string());
            const py::gil_scoped_release unlocked;
            bitinc::write_onnx_file(model, output);
        });

    module.def("inspect", [](const std::filesystem::path& package) {
        return summary_of(bitinc::read_manifest(package));
    });

    module.def(
        "unpack",
        [](const std::filesystem::path& package, std::optional<int> rung, bool direct) {
            return weights_of(unpacked(package, rung, direct));
        },
        py::arg("package"), py::arg("rung"), py::arg("direct"));

    module.def(
        "unpack_levels",
        [](const std::filesystem::path& package, int rung) {
            std::vector<std::optional<bitinc::QuantizedTensor>> levels;
            bitinc::Manifest manifest;
            {
                const py::gil_scoped_release unlocked;
                manifest = bitinc::read_manifest(package);
                levels = bitinc::unpack_levels(package, rung);
            }
            py::dict result;
            for (std::size_t t = 0; t < levels.size(); ++t) {
                if (!levels[t]) continue;
                const bitinc::TensorEntry& tensor = manifest.tensors[t];
                std::vector<py::ssize_t> shape(tensor.shape.begin(), tensor.shape.end());
                py::array_t<std::int32_t> indices(shape);
                std::copy(levels[t]->indices.begin(), levels[t]->indices.end(),
                          indices.mutable_data());
                py::array_t<float> steps(py::ssize_t(levels[t]->steps.size()));
                std::copy(levels[t]->steps.begin(), levels[t]->steps.end(), steps.mutable_data());
                result[py::str(tensor.name)] =
                    py::dict(py::arg("bits") = levels[t]->bits, py::arg("steps") = steps,
                             py::arg("indices") = indices);
            }
            return result;
        },
        py::arg("package"), py::arg("rung"));

    module.def(
        "unpack_from_previous",
        [](const std::filesystem::path& package, const std::filesystem::path& previous,
           std::optional<int> rung) {
            bitinc::Model model;
            {
                const py::gil_scoped_release unlocked;
                model = bitinc::unpack_from_previous(package, bitinc::read_onnx_file(previous),
                                                     rung.value_or(0));
            }
            return weights_of(std::move(model));
        },
        py::arg("package"), py::arg("previous"), py::arg("rung"));

    module.def(
        "unpack_onnx",
        [](const std::filesystem::path& package, std::optional<int> rung, bool direct) {
            return py::bytes(bitinc::serialize_onnx(unpacked(package, rung, direct)));
        },
        py::arg("package"), py::arg("rung"), py::arg("direct"));

    module.def("verify", [](const std::filesystem::path& package) {
        bitinc::VerifyReport report;
        {
            const py::gil_scoped_release unlocked;
            report = bitinc::verify_package(package);
        }
        py::dict result;
        result["ok"] = report.problems.empty();
        result["problems"] = report.problems;
        result["files"] = report.files;
        result["units"] = report.units;
        result["bytes"] = report.bytes;
        return result;
    });

    module.def(
        "fetch",
        [](const std::string& url, const std::string& until, bool direct,
           const std::function<void(std::uint64_t, std::uint64_t)>& progress,
           const std::optional<std::string>& trust, const std::string& installed_releases) {
            bitinc::FetchOptions options;
            options.mode = direct ? bitinc::FetchMode::direct : bitinc::FetchMode::incremental;
            if (until == "accuracy") {
                options.until_accuracy_point = true;
            } else if (until != "exact") {
                options.until_bits = std::stoi(until);
            }
            if (trust) options.trust = bitinc::FetchOptions::Trust{*trust, installed_releases};
            if (progress) {
                // Progress events come on the fetching thread, which holds no
                // GIL while the download runs.
                options.on_event = [&progress](const bitinc::FetchEvent& event) {
                    if (event.kind != bitinc::FetchEvent::Kind::progress) return;
                    const py::gil_scoped_acquire locked;
                    progress(event.bytes_done, event.bytes_total);
                };
            }
            bitinc::FetchResult result;
            {
                const py::gil_scoped_release unlocked;
                result = bitinc::fetch_package(url, options);
            }
            py::dict fetched;
            fetched["weights"] = weights_of(std::move(result.model));
            fetched["bits"] = result.reached_bits;
            fetched["degraded_tensors"] = result.degraded_tensors;
            fetched["bytes_downloaded"] = result.bytes_downloaded;
            fetched["seconds"] = result.seconds;
            fetched["signer_key_id"] = result.signer_key_id;
            return fetched;
        },
        py::arg("url"), py::arg("until"), py::arg("direct"), py::arg("progress"), py::arg("trust"),
        py::arg("installed_releases"));

    // The push decoder (device SDK): the caller moves the bytes.
    py::class_<bitinc::PackageDecoder>(module, "Decoder")
        .def(py::init([](bool direct, int until_bits, bool until_accuracy_point,
                         const std::optional<std::string>& trust,
                         const std::string& installed_releases, const std::string& source) {
                 bitinc::DecoderOptions options;
                 options.direct = direct;
                 options.until_bits = until_bits;
                 options.until_accuracy_point = until_accuracy_point;
                 if (trust)
                     options.verify_manifest =
                         bitinc::trusted_manifest_check(*trust, installed_releases);
                 return bitinc::PackageDecoder(options, source);
             }),
             py::arg("direct"), py::arg("until_bits"), py::arg("until_accuracy_point"),
             py::arg("trust"), py::arg("installed_releases"), py::arg("source"))
        .def("push_manifest",
             [](bitinc::PackageDecoder& decoder, const py::bytes& bytes) {
                 const std::string_view view = bytes;
                 decoder.push_manifest(
                     {reinterpret_cast<const std::uint8_t*>(view.data()), view.size()});
             })
        .def("push_signature",
             [](bitinc::PackageDecoder& decoder, const py::bytes& bytes) {
                 const std::string_view view = bytes;
                 decoder.push_signature(
                     {reinterpret_cast<const std::uint8_t*>(view.data()), view.size()});
             })
        .def("push",
             [](bitinc::PackageDecoder& decoder, const std::string& file, std::uint64_t offset,
                const py::bytes& bytes) {
                 const std::string_view view = bytes;
                 decoder.push(file, offset,
                              {reinterpret_cast<const std::uint8_t*>(view.data()), view.size()});
             })
        .def("give_up",
             [](bitinc::PackageDecoder& decoder, const std::string& file, std::uint64_t begin,
                std::uint64_t end) {
                 decoder.give_up({file, begin, end});
             })
        .def("next_event",
             [](bitinc::PackageDecoder& decoder) {
                 const bitinc::DecoderEvent event = decoder.next_event();
                 static constexpr const char* kinds[] = {
                     "need_input", "manifest_ready",       "topology_ready", "unit_damaged",
                     "rung_ready", "accuracy_point_ready", "degraded",       "done"};
                 py::list wanted;
                 for (const bitinc::ByteRange& range : event.wanted)
                     wanted.append(py::make_tuple(range.file, range.begin, range.end));
                 py::dict result;
                 result["kind"] = kinds[static_cast<int>(event.kind)];
                 result["wanted"] = wanted;
                 result["rung"] = event.rung;
                 result["bits"] = event.bits;
                 result["message"] = event.message;
                 return result;
             })
        .def("has_model", &bitinc::PackageDecoder::has_model)
        .def("snapshot",
             [](const bitinc::PackageDecoder& decoder) { return weights_of(decoder.snapshot()); });

    module.def("generate_key", [] {
        const bitinc::SigningKeyPair key = bitinc::generate_signing_key();
        return py::make_tuple(key.private_pem, key.public_pem);
    });
    module.def("key_id", [](const std::string& pem) { return bitinc::key_id_of(pem); });
}
