"""The Linux watchdog userspace ABI (include/uapi/linux/watchdog.h), x86_64 numbers.

Only x86_64's `_IOC` bit layout is written out: the project runs on x86_64, and mips, sparc,
powerpc and parisc encode direction bits differently (Patroni computes them; we refuse to
guess). `tests/unit/test_watchdog_device.py` re-derives every number from `_IOC`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

WDIOC_GETSUPPORT = 0x80285700  # _IOR('W', 0, struct watchdog_info): 40 bytes
WDIOC_GETSTATUS = 0x80045701
WDIOC_GETBOOTSTATUS = 0x80045702
WDIOC_SETOPTIONS = 0x80045704  # declared _IOR in the kernel header although it writes
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR: the kernel writes the effective timeout back
WDIOC_GETTIMEOUT = 0x80045707
WDIOC_GETTIMELEFT = 0x8004570A

WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_PRETIMEOUT = 0x0200
WDIOF_KEEPALIVEPING = 0x8000

OPTION_NAMES: dict[int, str] = {
    0x0001: "OVERHEAT", 0x0002: "FANFAULT", 0x0004: "EXTERN1", 0x0008: "EXTERN2",
    0x0010: "POWERUNDER", 0x0020: "CARDRESET", 0x0040: "POWEROVER",
    WDIOF_SETTIMEOUT: "SETTIMEOUT", WDIOF_MAGICCLOSE: "MAGICCLOSE",
    WDIOF_PRETIMEOUT: "PRETIMEOUT", 0x0400: "ALARMONLY", WDIOF_KEEPALIVEPING: "KEEPALIVEPING",
}

_INFO = struct.Struct("=II32s")  # u32 options, u32 firmware_version, u8 identity[32]
INFO_BYTES = _INFO.size  # 40
_INT = struct.Struct("=i")
INT_BYTES = _INT.size


@dataclass(frozen=True)
class WatchdogInfo:
    options: int
    firmware_version: int
    identity: str

    def supports(self, flag: int) -> bool:
        return bool(self.options & flag)

    def option_names(self) -> list[str]:
        return [name for bit, name in sorted(OPTION_NAMES.items()) if self.options & bit]


def parse_info(raw: bytes) -> WatchdogInfo:
    options, firmware, identity = _INFO.unpack(raw[:INFO_BYTES])
    text = identity.split(b"\0", 1)[0].decode("ascii", "replace")
    return WatchdogInfo(options, firmware, text)


def pack_info(info: WatchdogInfo) -> bytes:
    """The kernel's side of GETSUPPORT, for fake drivers in tests."""
    return _INFO.pack(info.options, info.firmware_version, info.identity.encode()[:32])


def pack_int(value: int) -> bytearray:
    return bytearray(_INT.pack(value))


def unpack_int(raw: bytes) -> int:
    return int(_INT.unpack(raw[:INT_BYTES])[0])
