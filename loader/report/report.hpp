// `report` and the README's main job: what the correlation engine
// learnt, per VM and gfn range, as text and as JSON.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "loader/model/engine.hpp"

namespace gms {

std::string report_text(const Engine& engine);
nlohmann::json report_json(const Engine& engine);
// An invalidation storm's figures: rates, histograms, top sources.
std::string storm_text(const Engine& engine, uint64_t vm, const StormStats& st);

}  // namespace gms
