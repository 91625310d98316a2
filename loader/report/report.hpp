// `report` and the README's main job: what the correlation engine
// learnt, per VM and gfn range, as text and as JSON.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "loader/model/engine.hpp"

namespace gms {

std::string report_text(const Engine& engine);
nlohmann::json report_json(const Engine& engine);
// A critical exposure as report --json lists it (#/$defs/exposure).
nlohmann::json exposure_json(const Engine& engine, const Exposure& x);
// One dma-buf as report --json lists it (schemas/summary.schema.json#/$defs/dma_buf).
nlohmann::json dma_buf_json(const Engine& engine, const DmaBuf& d);
// An invalidation storm's figures: rates, histograms, top sources.
std::string storm_text(const Engine& engine, uint64_t vm, const StormStats& st);

}  // namespace gms
