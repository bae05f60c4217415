// ProgressiveModel over a URL: the runtime component's way in, with our
// fetcher (fetch_package: parallel decoding, retries, resuming, the
// download timeline) and the OpenCV engine when the caller brings no
// factory. The core it drives is in progressive_model.cpp.
#include "bitinc/error.hpp"
#include "runtime/progressive_state.hpp"

namespace bitinc {

void ProgressiveModel::State::on_fetch_event(const FetchEvent& event) {
    switch (event.kind) {
        case FetchEvent::Kind::manifest_ready:
            if (event.manifest != nullptr) note_manifest(*event.manifest);
            break;
        case FetchEvent::Kind::topology_ready:
            note_topology(*event.assembler);
            break;
        case FetchEvent::Kind::rung_ready:
            on_rung_ready(*event.assembler, event.bits, event.units_applied);
            break;
        case FetchEvent::Kind::accuracy_point_ready:
            on_accuracy_point(*event.assembler, event.units_applied);
            break;
        case FetchEvent::Kind::degraded:
            report_degraded(event.bits, event.tensors, event.message);
            break;
        case FetchEvent::Kind::progress:
            // The base rung itself is needed whole.
            if (event.bits != base_bits && event.assembler != nullptr)
                consider_progressive_build(*event.assembler, event.units_applied);
            break;
        default:
            break;
    }
}

ProgressiveModel::ProgressiveModel(std::string url, ProgressiveOptions options)
    : state_(std::make_shared<State>()) {
    state_->name = std::move(url);
    state_->options = std::move(options);
    State* state = state_.get();
    state_->factory =
        state_->options.engine_factory
            ? state_->options.engine_factory
            : EngineFactory([state](Model model) {
                  return create_opencv_engine(std::move(model), state->name, state->options.engine);
              });
    state_->download = [state]() -> std::optional<FetchResult> {
        FetchOptions fetch_options = state->options.fetch;
        fetch_options.cancel = &state->cancel;
        fetch_options.hold_decoding = &state->hold_decoding;
        fetch_options.on_event = [state](const FetchEvent& event) { state->on_fetch_event(event); };
        return fetch_package(state->name, fetch_options);
    };
    // An earlier version the device holds serves at once (bits 0) while
    // the delta from it arrives.
    if (state_->options.fetch.previous) {
        state_->pending = progressive::BuildRequest{*state_->options.fetch.previous, 0, 0, false};
    }
    state_->launch();
}

}  // namespace bitinc
