"""Labs left behind by a test session that was killed (SIGKILL, a lost machine session):
its fixtures' teardown never ran, so its namespaces, processes, shared memory and lab dir
stay. A lab made with `owned=True` records its owner; once that process is gone, the lab is
abandoned and is torn down here. Labs without an owner (`pgwarden-lab up`, `make demo`) are
never touched: they outlive the command that made them on purpose."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pgwarden.lab.common import same_process
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import BASE_DIR, LabError, find_labs, read_state


def abandoned(state: dict[str, Any]) -> bool:
    owner = state.get("owner")
    return isinstance(owner, dict) and not same_process(owner)


def sweep_abandoned(base: Path = BASE_DIR,
                    log: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Tear down every abandoned lab under `base`; the prefixes of those removed."""
    swept = []
    for lab_dir in find_labs(base):
        try:
            state = read_state(lab_dir)
        except LabError:
            continue
        if not abandoned(state):
            continue
        log(f"removing lab {state.get('prefix')}: its owner (pid "
            f"{state['owner'].get('pid')}) is gone")
        try:
            Lab.load(lab_dir=lab_dir).down()
        except (LabError, KeyError, OSError) as e:
            # one lab that cannot be removed must not stop the others, nor the new session
            log(f"could not remove lab {state.get('prefix')}: {e}")
            continue
        swept.append(str(state.get("prefix")))
    return swept
