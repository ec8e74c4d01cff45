"""The results file: ratios against the targets, the tables, and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_CONC = 32


def _pts(doc: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [p for p in doc["points"] if all(p.get(k) == v for k, v in match.items())]


def label(p: dict[str, Any]) -> str:
    if p["server"] == "corolla":
        procs = f" x{p['workers']} procs" if p.get("workers", 1) > 1 else ""
        return f"corolla {p['format']} {'batch' if p['batching'] else 'no-batch'}{procs}"
    return f"{p['server']} {p['format']}" + (" (batching)" if p["batching"] else "")


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for model in doc["settings"]["models"]:
        pts = _pts(doc, model=model, concurrency=TARGET_CONC)
        cor = [p for p in pts if p["server"] == "corolla"]
        peers = [p for p in pts if p["server"] != "corolla"]
        m: dict[str, Any] = {}
        if cor:
            best = max(cor, key=lambda p: p["rps"])
            m["corolla_best"] = {"label": label(best), "rps": best["rps"],
                                 "cpu_ms_per_req": best["server_cpu_ms_per_req"]}
            lean_c = min(cor, key=lambda p: p["server_cpu_ms_per_req"] or 1e9)
            m["corolla_leanest"] = {"label": label(lean_c),
                                    "cpu_ms_per_req": lean_c["server_cpu_ms_per_req"]}
            for fmt in ("b64", "raw"):
                on = [p for p in cor if p["format"] == fmt and p["batching"]]
                if on:
                    m[f"corolla_{fmt}_rps"] = on[0]["rps"]
        if peers:
            bp = max(peers, key=lambda p: p["rps"])
            m["best_peer"] = {"label": label(bp), "rps": bp["rps"],
                              "cpu_ms_per_req": bp["server_cpu_ms_per_req"]}
            # Steadier than requests/s on a shared machine: CPU per request of the most
            # CPU-frugal peer against Corolla's most frugal REST/gRPC variant with batching.
            lean = min(peers, key=lambda p: p["server_cpu_ms_per_req"] or 1e9)
            m["leanest_peer"] = {"label": label(lean),
                                 "cpu_ms_per_req": lean["server_cpu_ms_per_req"]}
            if cor:
                m["corolla_vs_best_peer"] = m["corolla_best"]["rps"] / bp["rps"]
                if "corolla_b64_rps" in m:
                    b64 = [p for p in peers if p["format"] == "b64"]
                    if b64:
                        m["corolla_b64_vs_best_peer_b64"] = m["corolla_b64_rps"] / max(
                            p["rps"] for p in b64)
        lim = doc["limit"].get(model)
        if lim:
            m["limit_photos_per_s"] = lim["best"]["photos_per_s"]
            m["limit_batch"] = lim["best"]["batch"]
            if cor:
                m["corolla_vs_limit"] = m["corolla_best"]["rps"] / m["limit_photos_per_s"]
            m["single_call_p50_ms"] = lim["single_call_ms"]["p50"]
            c1 = _pts(doc, model=model, server="corolla", concurrency=1)
            m["c1_p50_minus_single_call_ms"] = {
                label(p): p["p50_ms"] - lim["single_call_ms"]["p50"] for p in c1}
            if "single_call_all_cores_ms" in lim:
                m["c1_p50_minus_single_call_all_cores_ms"] = {
                    label(p): p["p50_ms"] - lim["single_call_all_cores_ms"]["p50"] for p in c1}
            work = lim["cpu_ms_per_photo_decode"] + lim["cpu_ms_per_photo_infer"][
                str(lim["best"]["batch"])]
            m["model_cpu_ms_per_photo"] = work
            if cor:
                m["cpu_efficiency_vs_limit"] = work / m["corolla_leanest"]["cpu_ms_per_req"]
            m["server_overhead_cpu_ms_per_req"] = {
                label(p): p["server_cpu_ms_per_req"] - work for p in cor}
        s[model] = m
    return s


def _f(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    st, mach = doc["settings"], doc["machine"]
    L: list[str] = []
    L.append(f"# Benchmark {doc['name']}: {doc['started']}")
    L.append("")
    L.append(f"Machine: {mach['cpus']} cores, {mach['memory_gb']} GiB, {mach['platform']}, "
             f"Python {mach['python']}. Load average at start "
             f"{', '.join(f'{x:.2f}' for x in mach['loadavg_start'])}, at end "
             f"{', '.join(f'{x:.2f}' for x in mach.get('loadavg_end', ()))}. "
             f"`other cores` in the tables is the CPU that neither the server nor the load "
             f"generator used (other users of the machine): where it is not near 0, absolute "
             f"numbers are low and only ratios measured side by side mean much.")
    L.append("")
    L.append(f"Each point: {st['warmup']:g} s warm-up, then {st['seconds']:g} s of wrk (one "
             f"thread, C keep-alive connections) on 127.0.0.1, rotating through "
             f"{st['photos']} real photos (mean {st['photo_bytes_mean'] / 1024:.0f} KiB); "
             "gRPC points use h2load (C, C HTTP/2 connections, the photo of median size; "
             "harness/h2load.py) instead of wrk, or harness/grpc_load.py with "
             "BENCH_GRPC_CLIENT=grpcio. "
             "CPU: the server's whole process tree (psutil). Requests/s counts 2xx answers. "
             "Formats: b64 = JSON with base64 photos in each server's own protocol, raw = the "
             "JPEG as the body, grpc = TF Serving Predict with a DT_STRING photo.")
    L.append("")
    for name, info in doc["models"].items():
        L.append(f"- **{name}**: {info['source']}")
    L.append("")
    codes = sorted({p["code"] for p in doc["points"] if p.get("code")})
    if codes:
        L.append(f"Corolla code measured (commit at each server start): {', '.join(codes)}"
                 + (" — **it changed during the run**: compare Corolla rows with care."
                    if len(codes) > 1 else "."))
        L.append("")
    summ = doc.get("summary", {})
    if summ:
        L.append("## Against the targets")
        L.append("")
        L.append("| model | in-process limit (photos/s) | Corolla best @32 "
                 "| vs limit (target ≥ 0.90) | best peer @32 | Corolla / best peer "
                 "| c=1 p50 − single call on one thread (on all cores) (target ≤ 2 ms) |")
        L.append("|---|---|---|---|---|---|---|")
        for model, m in summ.items():
            cb, bp = m.get("corolla_best"), m.get("best_peer")
            c1 = m.get("c1_p50_minus_single_call_ms") or {}
            wide = m.get("c1_p50_minus_single_call_all_cores_ms") or {}
            c1s = "; ".join(f"{k}: {v:+.1f}" + (f" ({wide[k]:+.1f})" if k in wide else "")
                            for k, v in c1.items() if "no-batch" not in k)
            lim = m.get("limit_photos_per_s")
            L.append(
                f"| {model} | {_f(lim)}" + (f" (batch {m['limit_batch']})" if lim else "")
                + f" | {_f(cb['rps']) + ' (' + cb['label'] + ')' if cb else '–'}"
                f" | {_f(m.get('corolla_vs_limit'), 2)}"
                f" | {_f(bp['rps']) + ' (' + bp['label'] + ')' if bp else '–'}"
                f" | {_f(m.get('corolla_vs_best_peer'), 2)} | {c1s or '–'} |")
        L.append("")
        L.append("Tiny model target: Corolla ≥ 2x the best peer's requests/s at concurrency 32.")
        L.append("")
        L.append("CPU per request at concurrency 32 (steadier than requests/s when others use "
                 "the machine; the limit's is decode + inference at its best batch size):")
        L.append("")
        L.append("| model | limit CPU ms/photo | leanest Corolla: CPU ms/req | limit / Corolla "
                 "| fastest peer: CPU ms/req | leanest peer: CPU ms/req |")
        L.append("|---|---|---|---|---|---|")
        for model, m in summ.items():
            cb, bp, lp = m.get("corolla_leanest"), m.get("best_peer"), m.get("leanest_peer")
            L.append(f"| {model} | {_f(m.get('model_cpu_ms_per_photo'), 2)} | "
                     f"{_f(cb['cpu_ms_per_req'], 2) + ' (' + cb['label'] + ')' if cb else '–'} | "
                     f"{_f(m.get('cpu_efficiency_vs_limit'), 2)} | "
                     f"{_f(bp['cpu_ms_per_req'], 2) + ' (' + bp['label'] + ')' if bp else '–'} | "
                     f"{_f(lp['cpu_ms_per_req'], 2) + ' (' + lp['label'] + ')' if lp else '–'} |")
        L.append("")
    if doc["limit"]:
        L.append("## In-process limit")
        L.append("")
        L.append("| model | photos/s by batch size (all cores; before the servers) "
                 "| limit used: before / after the servers → mean "
                 "| decode+preprocess CPU ms/photo "
                 "| inference CPU ms/photo by batch "
                 "| single call p50 / p99 ms: one thread; all cores |")
        L.append("|---|---|---|---|---|---|")
        for model, lim in doc["limit"].items():
            tp = ", ".join(f"{b}: {v:.0f}" for b, v in lim["throughput"].items())
            inf = ", ".join(f"{b}: {v:.2f}" for b, v in lim["cpu_ms_per_photo_infer"].items())
            sc = lim["single_call_ms"]
            sw = lim.get("single_call_all_cores_ms")
            wide_s = f"; {sw['p50']:.1f} / {sw['p99']:.1f}" if sw else ""
            used = (f"{lim.get('before', 0):.0f} / {lim.get('after', 0):.0f} → "
                    f"{lim['best']['photos_per_s']:.0f} (batch {lim['best']['batch']})")
            L.append(f"| {model} | {tp} | {used} | {lim['cpu_ms_per_photo_decode']:.2f} | "
                     f"{inf} | {sc['p50']:.1f} / {sc['p99']:.1f}{wide_s} |")
        L.append("")
    for model in st["models"]:
        pts = _pts(doc, model=model)
        if not pts:
            continue
        L.append(f"## {model}")
        L.append("")
        L.append("| server | format | batching | C | req/s | p50 ms | p99 ms | server cores "
                 "| server CPU ms/req | loadgen cores | other cores | RSS MiB | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p in pts:
            server = p["server"] + (f" ({p['workers']} processes)"
                                    if p.get("workers", 1) > 1 else "")
            L.append(f"| {server} | {p['format']} | {'on' if p['batching'] else 'off'} | "
                     f"{p['concurrency']} | {p['rps']:,.1f} | {p['p50_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {p['server_cpu_cores']:.2f} | "
                     f"{p['server_cpu_ms_per_req']:.2f} | {p['wrk_cpu_cores']:.2f} | "
                     f"{p['other_cpu_cores']:.2f} | {p['rss_mb']:.0f} | "
                     f"{', '.join(f'{k} {v}' for k, v in p['errors'].items()) or ''} |")
        m = summ.get(model, {})
        if m.get("server_overhead_cpu_ms_per_req"):
            L.append("")
            L.append(f"Model work (decode + inference at the limit's batch size): "
                     f"{m['model_cpu_ms_per_photo']:.2f} CPU ms/photo; Corolla's own overhead "
                     "per request (server CPU ms/req minus that): " + "; ".join(
                         f"{k} {v:+.2f}" for k, v in m["server_overhead_cpu_ms_per_req"].items()
                         if k.endswith(" batch") or "no-batch" in k or k.endswith(" procs")))
        L.append("")
    if doc["failures"]:
        L.append("## Failures")
        L.append("")
        for f in doc["failures"]:
            err = f["error"].strip().splitlines()
            L.append(f"- {f['what']}: `{err[-1] if err else ''}`")
        L.append("")
    L.append("## Versions")
    L.append("")
    for s, v in doc["versions"].items():
        L.append(f"- {s}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    L.append("")
    path.write_text("\n".join(L))


def write_chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in doc["settings"]["models"] if _pts(doc, model=m)]
    if not models:
        return
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 9), squeeze=False)
    for i, model in enumerate(models):
        ax = axes[0][i]
        pts = _pts(doc, model=model, concurrency=TARGET_CONC)
        pts.sort(key=lambda p: (p["server"] != "corolla", -p["rps"]))
        names = [label(p) for p in pts]
        colors = ["#c0392b" if p["server"] == "corolla" else "#7f8c8d" for p in pts]
        ax.barh(names[::-1], [p["rps"] for p in pts][::-1], color=colors[::-1])
        lim = doc["limit"].get(model)
        if lim:
            ax.axvline(lim["best"]["photos_per_s"], color="k", ls="--",
                       label=f"in-process limit {lim['best']['photos_per_s']:.0f}/s")
            ax.axvline(0.9 * lim["best"]["photos_per_s"], color="k", ls=":",
                       label="90% of the limit")
            ax.legend(loc="lower right", fontsize=8)
        unit = "photos/s" if doc["models"][model]["image"] else "requests/s"
        ax.set_title(f"{model}: {unit} at concurrency {TARGET_CONC}")
        ax.tick_params(axis="y", labelsize=8)
        ax = axes[1][i]
        ax.set_prop_cycle(color=[plt.get_cmap("tab20")(k) for k in range(20)])
        series: dict[str, list[tuple[int, float]]] = {}
        for p in _pts(doc, model=model):
            series.setdefault(label(p), []).append((p["concurrency"], p["p50_ms"]))
        for name, xs in sorted(series.items()):
            xs.sort()
            style = "-o" if name.startswith("corolla") else "--."
            ax.plot([x for x, _ in xs], [y for _, y in xs], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (connections)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{model}: p50 latency")
        ax.legend(fontsize=7)
    fig.suptitle(f"Corolla benchmark {doc['name']} {doc['started']} "
                 f"({doc['machine']['cpus']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
