// Refinement in order of value: a rung file rewritten so that its units come
// tensor by tensor in a given order, and the manifest entries to match.
#include "package/refinement_order.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <vector>

#include "bitinc/error.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace fs = std::filesystem;

void reorder_refinement_units(const fs::path& directory, Manifest& manifest, std::size_t rung_index,
                              const std::vector<std::size_t>& tensor_order) {
    if (rung_index >= manifest.rungs.size() ||
        manifest.rungs[rung_index].kind != RungKind::refinement) {
        throw Error(ErrorCode::invalid_argument,
                    "reorder: rung " + std::to_string(rung_index) + " is not a refinement");
    }
    RungEntry& rung = manifest.rungs[rung_index];
    // Each tensor's units, in chunk order; the order must name every tensor
    // the rung carries exactly once.
    std::map<std::size_t, std::vector<const UnitEntry*>> by_tensor;
    for (const UnitEntry& unit : rung.units) by_tensor[unit.tensor].push_back(&unit);
    std::vector<std::size_t> seen = tensor_order;
    std::sort(seen.begin(), seen.end());
    std::vector<std::size_t> carried;
    for (const auto& entry : by_tensor) carried.push_back(entry.first);
    if (seen != carried) {
        throw Error(
            ErrorCode::invalid_argument,
            "reorder: the order does not name each tensor of " + rung.data.file + " exactly once");
    }

    const fs::path path = directory / rung.data.file;
    const fs::path reordered = directory / (rung.data.file + ".reordered");
    std::ifstream in(path, std::ios::binary);
    std::ofstream out(reordered, std::ios::binary | std::ios::trunc);
    if (!in || !out) throw Error(ErrorCode::io, "reorder: cannot open " + path.string());
    std::vector<UnitEntry> units;
    units.reserve(rung.units.size());
    core::Sha256 hash;
    std::uint64_t offset = manifest.first_unit_offset(rung);
    std::vector<char> buffer;
    for (const std::size_t tensor : tensor_order) {
        for (const UnitEntry* unit : by_tensor[tensor]) {
            buffer.resize(unit->length);
            in.seekg(std::streamoff(unit->offset));
            in.read(buffer.data(), std::streamsize(buffer.size()));
            if (!in)
                throw Error(ErrorCode::corrupt_data,
                            "reorder: " + path.string() + " is shorter than its manifest");
            out.write(buffer.data(), std::streamsize(buffer.size()));
            hash.update(std::string_view(buffer.data(), buffer.size()));
            units.push_back(*unit);
            units.back().offset = offset;
            offset += unit->length;
        }
    }
    out.flush();
    if (!out)
        throw Error(ErrorCode::io, "reorder: cannot write " + reordered.string() + " (disk full?)");
    out.close();
    in.close();
    std::error_code error;
    fs::rename(reordered, path, error);
    if (error)
        throw Error(ErrorCode::io,
                    "reorder: cannot replace " + path.string() + ": " + error.message());
    rung.units = std::move(units);
    rung.data.sha256 = hash.finish_hex();
}

}  // namespace bitinc
