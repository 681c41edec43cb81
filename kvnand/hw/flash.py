"""A group of flash dies (channel > die > plane > block > page) as pipelines of page operations.

In-flash compute on one plane: array sense into the data register, copy to the cache register (so the
next page is sensed while this one drains), on-die ECC decode, then the plane's PEs. Raw readout of a
multi-plane batch: sense on all planes, register copy, then the die I/O (sharing the channel with the
other dies of that channel). Program: data in over the channel, then tPROG on the plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kvnand.config.schema import FlashArray
from kvnand.program import Pipe, batched, ceil, minimum


@dataclass(frozen=True)
class FlashGroup:
    """`dies` dies of `array` used together (all of them, or the G1 or G2 share of a KVNAND-D)."""

    name: str                  # system resource name ("ifc", "g1", "g2", "nand")
    array: FlashArray
    dies: int

    @property
    def die(self):
        return self.array.die

    @property
    def planes(self) -> int:
        return self.dies * self.die.geometry.planes

    @property
    def page_bytes(self) -> float:
        return self.die.geometry.page_size

    @property
    def channels_used(self) -> int:
        return minimum(self.array.channels, self.dies)

    @property
    def dies_per_channel(self) -> int:
        return ceil(self.dies / self.array.channels)

    @property
    def capacity_bytes(self) -> float:
        return self.dies * self.die.geometry.die_bytes

    def _sense_stages(self):
        die = self.die
        if die.cache_register:
            return [("array sense", die.cell.tR, ("array + data register",)),
                    ("register copy", die.t_register, ("array + data register", "cache register"))], "cache register"
        return [("array sense", die.cell.tR, ("array + data register",))], "array + data register"

    def ecc_decode_time(self) -> float:
        ecc = self.array.ecc
        if ecc.location != "on_die":
            return 0.0
        codewords = self.page_bytes / ecc.codeword_data
        return codewords * (ecc.codeword_data + ecc.codeword_parity) / ecc.decode_rate  # rate in B/s

    @cached_property
    def _pipes(self) -> dict:
        return {}  # compute pipes by MACs per page (a lowering at another context asks for the same ones)

    def compute_pipe(self, macs_per_page: float) -> Pipe:
        """One page per item through sense -> copy -> ECC -> PE on one plane."""
        if batched(macs_per_page):
            return self._compute_pipe(macs_per_page)
        pipe = self._pipes.get(macs_per_page)
        if pipe is None:
            pipe = self._pipes[macs_per_page] = self._compute_pipe(macs_per_page)
        return pipe

    def _compute_pipe(self, macs_per_page) -> Pipe:
        logic = self.array.logic
        stages, reg = self._sense_stages()
        ecc_t = self.ecc_decode_time()
        if ecc_t > 0:
            stages.append(("on-die ECC decode", ecc_t, (reg, "ECC decoder")))
            pe_hold = ("PE",)
        else:
            pe_hold = (reg, "PE")
        if logic.cores_per_die > 0:
            # cores shared by the planes of a die: a plane sees its share of the core's MAC rate
            rate = logic.cores_per_die * logic.core_rate / self.die.geometry.planes
        else:
            rate = logic.fmacs_per_plane * logic.clock
        stages.append(("PE (FMAC)", macs_per_page / rate, pe_hold))
        return Pipe(tuple(s[0] for s in stages), tuple(s[1] for s in stages), tuple(s[2] for s in stages))

    def io_rate_per_die(self) -> float:
        """Die I/O rate a die gets when all dies of its channel stream at once."""
        return minimum(self.die.io.rate, self.array.channel.rate / self.dies_per_channel)

    def readout_pipe(self) -> Pipe:
        """A multi-plane batch (one page on every plane of a die) sensed, then shipped over die I/O."""
        return self._readout_pipe

    @cached_property
    def _readout_pipe(self) -> Pipe:
        stages, reg = self._sense_stages()
        batch = self.die.geometry.planes * self.page_bytes
        stages.append(("die I/O + channel", batch / self.io_rate_per_die(), (reg, "die I/O")))
        return Pipe(tuple(s[0] for s in stages), tuple(s[1] for s in stages), tuple(s[2] for s in stages))

    def program_time(self, pages_per_plane: float) -> float:
        return pages_per_plane * self.die.cell.tPROG

    def copy_back(self, pages: float, erases: float, part: str, sense_action: str) -> tuple[float, dict[str, float]]:
        """Rewriting `pages` valid pages into fresh blocks and erasing `erases` blocks (refresh, garbage
        collection): each page is sensed, decoded and re-encoded (on the die, or through the controller over
        the die I/O) and programmed. Returns (seconds, spread over the group's planes; action counts, with
        `part` the energy-table prefix of the dies and `sense_action` the action counting the sensed bits)."""
        cell, ecc = self.die.cell, self.array.ecc
        bits = pages * self.page_bytes * 8
        ecc_bits = bits * (1 + ecc.codeword_parity / ecc.codeword_data)
        counts = {sense_action: bits, f"{part}.program_bits": bits}
        if ecc.location == "on_die":
            decode = self.ecc_decode_time()  # then the encode of the same bits, at the encoder's rate
            per_page = cell.tR + decode + decode * ecc.decode_rate / ecc.encode_rate + cell.tPROG
            counts.update({"flash.ecc_decode_bits": ecc_bits, "flash.ecc_encode_bits": ecc_bits})
        else:  # the page travels to the controller's ECC and back
            per_page = cell.tR + cell.tPROG + 2 * self.page_bytes / self.io_rate_per_die()
            counts.update({"ctrl.ecc_decode_bits": ecc_bits, "ctrl.ecc_encode_bits": ecc_bits, "ch.bits": 2 * bits})
            if part != "flash":
                counts[f"{part}.io_bits"] = 2 * bits
        counts[f"{part}.erase_blocks"] = erases
        return (pages * per_page + erases * cell.tBERS) / self.planes, counts
