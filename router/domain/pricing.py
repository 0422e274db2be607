"""What a request costs, in dollars, so that modes compare on one axis.

Cloud: tokens times the provider's price table. Edge: estimated energy, from the design study's
inference formula FLOPs ~= 2 x parameters x tokens, times the device's joules per FLOP, times the
price of electricity. The default 7e-10 J/FLOP assumes ~15 W at ~22 GFLOP/s; a quiet 2-core machine
decodes the 0.5B edge model at ~41 tokens/s (2 x 0.49e9 x 41 ~ 41 GFLOP/s), so the default is a
conservative bound, nearly 2x the energy, until a device's measured power replaces it.
"""
from __future__ import annotations

from dataclasses import dataclass

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class CostModel:
    cloud_input_usd_per_mtok: float
    cloud_output_usd_per_mtok: float
    edge_parameters: float
    edge_joules_per_flop: float
    usd_per_kwh: float

    def cloud_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.cloud_input_usd_per_mtok
                + completion_tokens * self.cloud_output_usd_per_mtok) / 1e6

    def edge_energy_joules(self, prompt_tokens: int, completion_tokens: int) -> float:
        flops = 2.0 * self.edge_parameters * (prompt_tokens + completion_tokens)
        return flops * self.edge_joules_per_flop

    def edge_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.edge_energy_joules(prompt_tokens, completion_tokens) / JOULES_PER_KWH * self.usd_per_kwh
