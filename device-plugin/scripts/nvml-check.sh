#!/usr/bin/env bash
# Builds gpupack-device-plugin, runs its NVML backend on this GPU machine and
# compares the discovered inventory with nvidia-smi: GPU UUIDs, usable memory
# (total less reserved, MiB) and the pairwise topology of `nvidia-smi topo -m`. Prints one
# verdict line at the end: NVML-CHECK PASS or NVML-CHECK FAIL.
#
#   device-plugin/scripts/nvml-check.sh [--no-build]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
bin="$repo/target/release/gpupack-device-plugin"
if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release -p device-plugin --bin gpupack-device-plugin
fi
command -v nvidia-smi >/dev/null || { echo "NVML-CHECK FAIL: nvidia-smi not found"; exit 1; }
command -v python3 >/dev/null || { echo "NVML-CHECK FAIL: python3 not found"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" inventory --backend nvml --node-name nvml-check > "$work/inventory.json"
nvidia-smi --query-gpu=index,uuid,memory.total,pci.bus_id,name,memory.reserved --format=csv,noheader,nounits > "$work/smi.csv"
nvidia-smi topo -m > "$work/topo.txt" || true

python3 - "$work" <<'PY'
import json, sys, re
work = sys.argv[1]
inv = json.load(open(f"{work}/inventory.json"))
problems = []
smi = {}
for line in open(f"{work}/smi.csv"):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 5:
        continue
    idx, uuid, mem_mib, bus, name = parts[:5]
    reserved = parts[5] if len(parts) > 5 else ""
    reserved_mib = int(float(reserved)) if re.fullmatch(r"[0-9.]+", reserved) else 0
    smi[int(idx)] = dict(uuid=uuid, mem_mib=int(float(mem_mib)) - reserved_mib, reserved_mib=reserved_mib, bus=bus.lower(), name=name)
gpus = {g["index"]: g for g in inv["gpus"]}
print(f"GPUs: plugin {len(gpus)}, nvidia-smi {len(smi)}")
if set(gpus) != set(smi):
    problems.append(f"GPU indexes differ: plugin {sorted(gpus)}, nvidia-smi {sorted(smi)}")
for i in sorted(set(gpus) & set(smi)):
    g, s = gpus[i], smi[i]
    mib = g["memoryBytes"] // (1 << 20)
    print(f"GPU {i}: {g['uuid']} {g['product']} {mib} MiB usable ({s['reserved_mib']} MiB reserved) numa={g.get('numaNode')} mig={g.get('migEnabled', False)} instances={len(g.get('migInstances', []))}")
    if g["uuid"] != s["uuid"]:
        problems.append(f"GPU {i}: UUID {g['uuid']} != nvidia-smi {s['uuid']}")
    # nvidia-smi reports MiB, rounded.
    if abs(mib - s["mem_mib"]) > 2:
        problems.append(f"GPU {i}: usable memory {mib} MiB != nvidia-smi total less reserved {s['mem_mib']} MiB")
    if g["pciBusId"].lower()[-12:] != s["bus"][-12:]:
        problems.append(f"GPU {i}: bus {g['pciBusId']} != nvidia-smi {s['bus']}")

# nvidia-smi topo -m: matrix of X, NV#, PIX, PXB, PHB, NODE, SYS.
expected = {"PIX": "singleSwitch", "PXB": "multiSwitch", "PHB": "hostBridge", "NODE": "sameNuma", "SYS": "crossSocket"}
rows = {}
header = None
for line in open(f"{work}/topo.txt"):
    cells = line.split()
    if not cells:
        continue
    if header is None and cells[0].startswith("GPU0"):
        header = [c for c in cells if re.fullmatch(r"GPU\d+", c)]
        continue
    if header and re.fullmatch(r"GPU\d+", cells[0]):
        rows[int(cells[0][3:])] = cells[1:1 + len(header)]
links = {(l["a"], l["b"]): l for l in inv["links"]}
for a, cells in rows.items():
    for j, cell in enumerate(cells):
        b = int(header[j][3:])
        if a >= b:
            continue
        l = links.get((a, b))
        if l is None:
            problems.append(f"pair ({a},{b}) missing from the plugin's links")
            continue
        if cell.startswith("NV"):
            n = int(cell[2:] or 0)
            ok = l["nvswitch"] or l["nvlinks"] == n
            what = f"NV{n}"
        else:
            ok = l["nvlinks"] == 0 and expected.get(cell) in (None, l["pcie"])
            what = cell
        print(f"pair ({a},{b}): nvidia-smi {what}, plugin nvlinks={l['nvlinks']} nvswitch={l['nvswitch']} pcie={l['pcie']}" + ("" if ok else "  <-- differs"))
        if not ok:
            problems.append(f"pair ({a},{b}): nvidia-smi {what} vs plugin {l}")
if len(gpus) < 2:
    print("single GPU: no pairs to compare")
for p in problems:
    print("MISMATCH:", p)
print("NVML-CHECK " + ("PASS" if not problems else f"FAIL ({len(problems)} mismatches)"))
sys.exit(1 if problems else 0)
PY
