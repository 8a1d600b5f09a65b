"""``python -m zitflow.cache info|gc|verify``: size, cleaning and checking of the store.

    python -m zitflow.cache info                  # entries, bytes, by stage kind
    python -m zitflow.cache gc --max-size 20GB    # drop least recently used entries
    python -m zitflow.cache verify                # check every entry, remove damaged ones
    python -m zitflow.cache verify --remove-unreadable   # ... and entries that cannot be read
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

from ..config import CacheConfig
from .store import CacheStore, CorruptEntry, EntryUnreadable
from .remote import open_store

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'20GB' -> 20_000_000_000; '512MiB' -> 536870912; a bare number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"size {text!r}: use a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zitflow.cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="store folder (default: cache.dir's default)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="entries and size")
    gc = sub.add_parser("gc", help="delete least recently used entries down to a size")
    gc.add_argument("--max-size", type=parse_size, required=True, help="e.g. 20GB, 500MiB, 0")
    verify = sub.add_parser("verify", help="check every entry's checksums; remove damaged ones")
    verify.add_argument("--remove-unreadable", action="store_true",
                        help="also remove entries that cannot be read (permissions, I/O errors); "
                             "by default they are reported and kept")
    args = ap.parse_args(argv)

    store = open_store(args.dir or CacheConfig().resolved_dir())
    if args.cmd == "info":
        entries = list(store.entries())
        by_kind = Counter()
        size_by_kind = Counter()
        for e in entries:
            by_kind[e.kind] += 1
            size_by_kind[e.kind] += e.size
        print(f"store {store.root}: {len(entries)} entries, {human(sum(e.size for e in entries))}")
        for kind, n in sorted(by_kind.items()):
            print(f"  {kind:<14} {n:>6} entries  {human(size_by_kind[kind]):>10}")
    elif args.cmd == "gc":
        removed = store.gc(args.max_size)
        left = sum(e.size for e in store.entries())
        print(f"removed {len(removed)} entries ({human(sum(e.size for e in removed))}); {human(left)} left")
    elif args.cmd == "verify":
        bad = unreadable = 0
        for e in list(store.entries()):
            try:
                store.load(e.key)
            except CorruptEntry as err:
                bad += 1
                print(f"removing {err}", file=sys.stderr)
                store.remove(e.key)
            except EntryUnreadable as err:
                unreadable += 1
                if args.remove_unreadable:
                    print(f"removing unreadable entry {e.key[:12]}: {err.why}", file=sys.stderr)
                    store.remove(e.key)
                else:
                    print(str(err), file=sys.stderr)
        kept = "removed" if args.remove_unreadable else "kept"
        print(f"verified store {store.root}: {bad} damaged entries removed, {unreadable} unreadable entries {kept}")
        return 1 if unreadable and not args.remove_unreadable else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
