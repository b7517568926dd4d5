"""Reader throughput: catalogue parse time and fields/s for load_field on a 96-field plate."""

from __future__ import annotations

import time

from _common import ensure_plate, machine
from phagoflow.core.opera import load_field, read_plate


def main() -> None:
    export = ensure_plate()
    t0 = time.perf_counter()
    cat = read_plate(export)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    for rec in cat.fields:
        load_field(cat, rec)
    t_load = time.perf_counter() - t0
    n = len(cat.fields)
    print(f"# reader ({machine()})")
    print(f"reader.index_parse_seconds      {t_index:.4f}  ({n} fields, {cat.format_version})")
    print(f"reader.fields_per_second        {n / t_load:.1f}  (load_field, 2 x 512 x 680 uint16)")


if __name__ == "__main__":
    main()
