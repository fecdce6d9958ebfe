"""The results as tables (text or markdown), the products' rates against the FMA peak, and a
plot.  The targets are in ``targets``."""

import os

import numpy as np

from ..io import atomic_write_to
from .cases import (
    CLIP_IMPLS,
    LAYER_IMPLS,
    MODEL_IMPL_TITLES,
    MODEL_IMPLS,
    MODEL_OP,
    NOISY,
    OP_TITLES,
    OPS,
    Case,
)

RATE_IMPLS = ("fastrnn", "torch")  # whose GF/s and percent of peak the tables show


# ---- rates against the FMA peak ---------------------------------------------------------------


def add_rates(results):
    """Add to every layer row its products' rate (``gflops``, from Case.flops and the median)
    and, where the run measured the core's FMA peak, ``pct_peak``: the rate as a percent of
    threads x the one-core peak; and copy both into the ratio rows as ``IMPL GF/s`` and
    ``IMPL %peak`` for fastrnn and torch.  Returns results."""
    peak = (results.get("meta", {}).get("peak") or {}).get("gflops")
    ratios = {(r["threads"], r["case"], r["op"]): r for r in results.get("ratios", [])}
    for row in results.get("layers", []):
        if not all(k in row for k in ("cell", "N", "T", "D", "H")) or not row["median_ms"]:
            continue
        case = Case(row["cell"], row["N"], row["T"], row["D"], row["H"])
        row["gflops"] = case.flops(row["op"]) / (row["median_ms"] * 1e-3) / 1e9
        if peak:
            row["pct_peak"] = 100.0 * row["gflops"] / (peak * row["threads"])
        ratio = ratios.get((row["threads"], row["case"], row["op"]))
        if ratio is not None and row["impl"] in RATE_IMPLS:
            ratio[f"{row['impl']} GF/s"] = row["gflops"]
            if peak:
                ratio[f"{row['impl']} %peak"] = row["pct_peak"]
    return results


def add_model_rates(results):
    """The same for the whole-model rows: ``gflops`` (the row's ``flops``, ModelCase.flops,
    over the median iteration) and ``pct_peak`` in every row, copied into the ratio rows as
    ``IMPL GF/s`` and ``IMPL %peak`` for every implementation.  Returns results."""
    peak = (results.get("meta", {}).get("peak") or {}).get("gflops")
    ratios = {(r["threads"], r["case"], r["op"]): r for r in results.get("ratios", [])}
    for row in results.get("models", []):
        if not row.get("flops") or not row["median_ms"]:
            continue
        row["gflops"] = row["flops"] / (row["median_ms"] * 1e-3) / 1e9
        if peak:
            row["pct_peak"] = 100.0 * row["gflops"] / (peak * row["threads"])
        ratio = ratios.get((row["threads"], row["case"], row["op"]))
        if ratio is not None:
            ratio[f"{row['impl']} GF/s"] = row["gflops"]
            if peak:
                ratio[f"{row['impl']} %peak"] = row["pct_peak"]
    return results


# ---- report -------------------------------------------------------------------------------------


def _md_or_text_block(lines, title, tab, markdown):
    """Append a titled table (header row first) to lines as markdown or aligned text."""
    if markdown:
        lines.append(f"\n**{title}**\n")
        lines.append("| " + " | ".join(tab[0]) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(tab[0]))) + "|")
        lines.extend("| " + " | ".join(str(x) for x in r) + " |" for r in tab[1:])
    else:
        lines.append("")
        lines.append(title)
        lines.extend(_table(tab[0], tab[1:]))


def format_model_table(results, markdown=False):
    """The "whole training iteration" tables (one per thread count) and the models' loss
    cross-check, as a list of lines (text or markdown); empty without model rows."""
    rows = results.get("models", [])
    if not rows:
        return []
    lines = []
    med = {(r["threads"], r["case"], r["impl"]): r for r in rows}
    ratios = {
        (r["threads"], r["case"]): r for r in results.get("ratios", []) if r["op"] == MODEL_OP
    }
    cfg = results.get("meta", {}).get("config", {})
    impls = [i for i in cfg.get("model_impls", MODEL_IMPLS) if any(r["impl"] == i for r in rows)]
    others = [i for i in impls if i != "fastrnn"]
    rate_impls = [i for i in RATE_IMPLS if i in impls]
    for threads in sorted({r["threads"] for r in rows}):
        cases = list(dict.fromkeys(r["case"] for r in rows if r["threads"] == threads))
        header = ["model"] + [f"{MODEL_IMPL_TITLES[i]} ms" for i in impls]
        header += [f"{MODEL_IMPL_TITLES[i]}/fastrnn" for i in others if "fastrnn" in impls]
        header += [f"{MODEL_IMPL_TITLES[i]} {u}" for i in rate_impls for u in ("GF/s", "%peak")]
        body = []
        for c in cases:
            row = [c]
            for i in impls:
                r = med.get((threads, c, i))
                row.append(
                    "-"
                    if r is None
                    else _fmt_ms(r["median_ms"])
                    + ("~" if r["iqr_ms"] > NOISY * r["median_ms"] else "")
                )
            rr = ratios.get((threads, c), {})
            if "fastrnn" in impls:
                row += [
                    f"{rr[f'{i}/fastrnn']:.2f}x" if f"{i}/fastrnn" in rr else "-" for i in others
                ]
            for i in rate_impls:
                r = med.get((threads, c, i)) or {}
                row.append(f"{r['gflops']:.1f}" if "gflops" in r else "-")
                row.append(f"{r['pct_peak']:.0f}%" if "pct_peak" in r else "-")
            body.append(row)
        _md_or_text_block(
            lines,
            f"threads={threads}, whole training iteration (forward + backward + clip_grads + "
            "SGD, recurrent state carried; book NumPy = the book's model on "
            "fastrnn.reference's layers)",
            [header] + body,
            markdown,
        )
    checks = results.get("model_checks", [])
    if checks:
        bad = [c for c in checks if not c["ok"]]
        by_impl = {}
        for c in checks:
            by_impl.setdefault(c["impl"], []).append(c)
        parts = [
            f"{MODEL_IMPL_TITLES.get(i, i)} first {max(c['first_rel_diff'] for c in cs):.1e}, "
            f"later {max(c['later_max_rel_diff'] for c in cs):.1e}"
            for i, cs in by_impl.items()
        ]
        lines.append("")
        lines.append(
            f"models: the same weights and batches in every implementation; losses of the "
            f"first iterations against fastrnn's: {len(checks) - len(bad)}/{len(checks)} agree "
            f"(worst relative difference, {'; '.join(parts)}; torch drifts after the first "
            "update: its LSTM has two bias vectors, each updated by the full gradient)"
        )
        for c in bad:
            lines.append(
                f"  MISMATCH: {c['impl']} on {c['case']}: losses {c['losses']} vs fastrnn "
                f"{c['fastrnn_losses']}"
            )
    return lines


def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def _table(header, rows, align=None):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    align = align or ["<"] + [">"] * (len(header) - 1)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths))
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(x) for x in r]) for r in rows]
    return lines


def _peak_text(meta):
    peak = meta.get("peak") or {}
    if not peak.get("gflops"):
        return " (not measured in this run)"
    return (
        f" ({peak['gflops']:.1f} GF/s in float32, fastrnn._cpu.peak_gflops on its "
        f"{peak.get('kernel', '?')} path)"
    )


def format_report(results, markdown=False):
    """The tables as text (or GitHub markdown)."""
    meta = results.get("meta", {})
    cfg = meta.get("config", {})
    lines = []
    med = {
        (r["threads"], r["case"], r["op"], r["impl"]): r
        for r in results["layers"] + results["clip"]
    }
    ratios = {(r["threads"], r["case"], r["op"]): r for r in results["ratios"]}

    def ms(key):
        """Median, marked '~' when the samples' interquartile range exceeds 20% of it."""
        if key not in med:
            return "-"
        r = med[key]
        return _fmt_ms(r["median_ms"]) + ("~" if r["iqr_ms"] > NOISY * r["median_ms"] else "")

    def block(title, tab):
        if markdown:
            lines.append(f"\n**{title}**\n")
            lines.append("| " + " | ".join(tab[0]) + " |")
            lines.append(
                "|" + "|".join("---" if i == 0 else "---:" for i in range(len(tab[0]))) + "|"
            )
            lines.extend("| " + " | ".join(str(x) for x in r) + " |" for r in tab[1:])
        else:
            lines.append("")
            lines.append(title)
            lines.extend(_table(tab[0], tab[1:]))

    reps = cfg.get("repeats", "?")
    bf16 = (
        " (fastrnn bf16: its products at bfloat16 precision, matmul_precision='medium')"
        if "fastrnn_bf16" in cfg.get("model_impls", ())
        else ""
    )
    lines.append(
        f"fastrnn bench: float32{bf16}; median ms per call over {reps} interleaved rounds "
        f"('~': samples spread over more than {NOISY:.0%} of the median, by IQR); "
        "x/fastrnn > 1: fastrnn is faster; fastrnn/floor: against the same products "
        "in the BLAS fastrnn calls (or, for clip_grads, the memory floor); GF/s: the matrix "
        "products' floating-point operations per second (the gate arithmetic not "
        "counted); %peak: that rate against threads x one core's measured FMA peak"
        + _peak_text(meta)
    )
    impls = cfg.get("impls", list(LAYER_IMPLS))
    threads_list = sorted({r["threads"] for r in results["layers"] + results["clip"]})
    for threads in threads_list:
        for op in [o for o in OPS if o in cfg.get("ops", OPS)]:
            cases = list(
                dict.fromkeys(
                    r["case"]
                    for r in results["layers"]
                    if r["threads"] == threads and r["op"] == op
                )
            )
            if not cases:
                continue
            header = ["case"] + [f"{i} ms" for i in impls]
            ratio_keys = [
                k
                for k in ("reference/fastrnn", "torch/fastrnn", "fastrnn/floor")
                if any(k in ratios.get((threads, c, op), {}) for c in cases)
            ]
            rate_keys = [
                f"{i} {u}"
                for i in RATE_IMPLS
                for u in ("GF/s", "%peak")
                if any(f"{i} {u}" in ratios.get((threads, c, op), {}) for c in cases)
            ]
            header += ratio_keys + rate_keys
            rows = []
            for c in cases:
                row = [c] + [ms((threads, c, op, i)) for i in impls]
                rr = ratios.get((threads, c, op), {})
                row += [f"{rr[k]:.2f}" if k in rr else "-" for k in ratio_keys]
                row += [
                    (f"{rr[k]:.1f}" if k.endswith("GF/s") else f"{rr[k]:.0f}%") if k in rr else "-"
                    for k in rate_keys
                ]
                rows.append(row)
            block(f"threads={threads}, {OP_TITLES[op]}", [header] + rows)
        cases = list(dict.fromkeys(r["case"] for r in results["clip"] if r["threads"] == threads))
        if cases:
            cimpls = cfg.get("clip_impls", list(CLIP_IMPLS))
            header = ["clip_grads"] + [f"{i} ms" for i in cimpls]
            ratio_keys = [
                k
                for k in (
                    "reference/fastrnn",
                    "torch/fastrnn",
                    "torch_loop/fastrnn",
                    "fastrnn/floor",
                )
                if any(k in ratios.get((threads, c, "clip"), {}) for c in cases)
            ]
            header += ratio_keys
            rows = []
            for c in cases:
                row = [c] + [ms((threads, c, "clip", i)) for i in cimpls]
                rr = ratios.get((threads, c, "clip"), {})
                row += [f"{rr[k]:.2f}" if k in rr else "-" for k in ratio_keys]
                rows.append(row)
            block(
                f"threads={threads}, clip_grads (torch = clip_grad_norm_ foreach=True, "
                "torch_loop = foreach=False)",
                [header] + rows,
            )
    lines.extend(format_model_table(results, markdown))
    if results.get("memory"):
        by = {(m["case"], m["impl"]): m for m in results["memory"]}
        cases = list(dict.fromkeys(m["case"] for m in results["memory"]))
        header = [
            "case",
            "fastrnn peak B/NTH",
            "reference peak B/NTH",
            "fastrnn peak MB",
            "reference peak MB",
            "ref/fastrnn",
            "fastrnn held B/NTH",
            "reference held B/NTH",
        ]
        rows = []
        for c in cases:
            f, r = by.get((c, "fastrnn")), by.get((c, "reference"))
            rows.append(
                [
                    c,
                    f"{f['peak_bytes_per_NTH']:.1f}" if f else "-",
                    f"{r['peak_bytes_per_NTH']:.1f}" if r else "-",
                    f"{f['peak_bytes'] / 1e6:.2f}" if f else "-",
                    f"{r['peak_bytes'] / 1e6:.2f}" if r else "-",
                    f"{r['peak_bytes'] / f['peak_bytes']:.2f}" if f and r else "-",
                    f"{f['retained_bytes_per_NTH']:.1f}" if f else "-",
                    f"{r['retained_bytes_per_NTH']:.1f}" if r else "-",
                ]
            )
        block(
            "peak extra memory of the first forward+backward of a fresh layer (tracemalloc; "
            "bytes per N*T*H element; 'held' = kept by the layer afterwards, outputs excluded)",
            [header] + rows,
        )
    bad = [c for c in results.get("checks", []) if not c["ok"]]
    checks = results.get("checks", [])
    if checks:
        worst = max(checks, key=lambda c: c["max_rel_diff"])
        lines.append("")
        lines.append(
            f"cross-check of hs, dxs, dWh against fastrnn: {len(checks) - len(bad)}/"
            f"{len(checks)} agree (worst relative difference {worst['max_rel_diff']:.1e}"
            f", {worst['impl']} on {worst['case']})"
        )
        for c in bad:
            lines.append(f"  MISMATCH: {c['impl']} on {c['case']}: {c['max_rel_diff']:.2e}")
    if results.get("targets"):
        rows = [
            [
                t["target"],
                t["threads"],
                t["case"],
                f"{t['value']:.2f}",
                "met" if t["met"] else "MISSED",
            ]
            for t in results["targets"]
        ]
        block(
            "targets (forward+backward, clip_grads and whole training iterations)",
            [["target", "threads", "case", "value", ""]] + rows,
        )
    bg = {}
    for r in results["layers"] + results["clip"] + results.get("models", []):
        if r.get("background_cores") is not None:
            bg[r["case"], r["threads"]] = r["background_cores"]
    if bg:
        busy = {k: v for k, v in bg.items() if v > 0.1}
        lines.append("")
        lines.append(
            f"background load (CPU used by other processes while timing): mean "
            f"{np.mean(list(bg.values())):.2f} cores, max {max(bg.values()):.2f}"
            + (
                ""
                if not busy
                else f"; {len(busy)} of {len(bg)} groups above 0.1 cores -- their numbers "
                "are disturbed: "
                + ", ".join(f"{c} (threads={t}: {v:.2f})" for (c, t), v in busy.items())
            )
        )
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _kernels_text(meta):
    """Which kernel makes each product, as far as the run knows: fastrnn's instruction set
    (its worker's fastrnn._isa.current()), the kernels of the BLAS it calls (fastrnn._blas),
    the peak probe's path.  The per-shape choices follow the rules in src/gemm/_packed.pxd."""
    w = meta.get("workers", {})
    fr = w.get("fastrnn") or {}
    isa = fr.get("fastrnn_kernels")
    sgemm = "sgemm"
    chosen = fr.get("fastrnn_blas") or {}
    if chosen.get("library"):
        sgemm = (
            f"{chosen['library']}'s {chosen.get('api') or 'BLAS'} sgemm "
            f"({chosen.get('architecture')} kernels)"
        )
    parts = []
    if isa:
        parts.append(
            f"fastrnn's step products: its packed micro-kernel ({isa}; 2-24-row "
            "single steps: its direct kernels; batch 1: sgemv)"
        )
        parts.append(
            "weight gradients: "
            + (
                "gemm_tn_packed (avx512) in float32 for dW of "
                "up to 640 rows and 64+ columns, else " + sgemm
                if isa == "avx512"
                else sgemm
            )
        )
        parts.append(f"input projection and dX: {sgemm}")
    if fr.get("bf16") and "fastrnn_bf16" in meta.get("config", {}).get("model_impls", ()):
        parts.append(
            "fastrnn bf16: its products by fastrnn's bfloat16 kernel (VDPBF16PS, fr_bf16.h; "
            "float32 for up to 24 rows and for a single row's or step's)"
        )
    if "torch" in w:
        parts.append(
            "torch: its own CPU kernels"
            + (" (oneDNN available)" if w["torch"].get("mkldnn") else "")
        )
    peak = meta.get("peak") or {}
    if peak.get("gflops"):
        parts.append(f"FMA peak probe: {peak.get('kernel')} path, {peak['gflops']:.1f} GF/s")
    return "; ".join(parts)


def format_machine(results, markdown=False):
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    lines = [
        f"CPU: {m.get('Model name', '?')} ({m.get('Vendor ID', '?')}), "
        f"{m.get('logical_cpus', '?')} logical CPUs ({m.get('usable_cpus', '?')} usable), "
        f"{m.get('Core(s) per socket', '?')} cores/socket x {m.get('Socket(s)', '?')} "
        f"socket, {m.get('Thread(s) per core', '?')} thread/core; L2 {m.get('L2 cache', '?')}"
        f", L3 {m.get('L3 cache', '?')}; SIMD {' '.join(m.get('simd', []))}"
        + (f"; hypervisor {m['Hypervisor vendor']}" if m.get("Hypervisor vendor") else "")
    ]
    for b in meta.get("blas", []):
        path = b.get("filepath") or ""
        folder = os.path.basename(os.path.dirname(path))
        fr_path = ((meta.get("workers", {}).get("fastrnn") or {}).get("fastrnn_blas") or {}).get(
            "filepath"
        )
        who = {
            "scipy.libs": "scipy's",
            "numpy.libs": "numpy's: used by the reference and the clip floor's np.dot",
        }.get(folder, folder)
        if fr_path and path == fr_path:
            who += ", called by fastrnn's kernels and the GEMM floor"
        lines.append(
            f"BLAS: {b.get('internal_api')} {b.get('version')} "
            f"({b.get('architecture')} kernels, {b.get('threading_layer')} threads), "
            f"{os.path.basename(path)} ({who})"
        )
    w = meta.get("workers", {})
    kernels = _kernels_text(meta)
    if kernels:
        lines.append("kernels: " + kernels)
    vers = [f"python {m.get('python')}"]
    if "fastrnn" in w:
        vers += [
            f"numpy {w['fastrnn'].get('numpy')}",
            f"scipy {w['fastrnn'].get('scipy')}",
            f"fastrnn {w['fastrnn'].get('fastrnn')} "
            f"({w['fastrnn'].get('fastrnn_kernels', '?')} kernels)",
        ]
    if "torch" in w:
        vers.append(f"torch {w['torch'].get('torch')}")
    if m.get("git"):
        vers.append(f"git {m['git']}")
    if m.get("kernels_built"):
        vers.append(f"kernels built {m['kernels_built']}")
    lines.append("versions: " + ", ".join(vers))
    env = m.get("env", {})
    lines.append(
        "environment: "
        + (
            ", ".join(f"{k}={v}" for k, v in env.items())
            if env
            else "no OPENBLAS_*/OMP_*/MKL_* variables set"
        )
    )
    lines.append(f"run: {meta.get('started')}, {meta.get('duration_s')} s")
    return "\n".join(("- " + l) if markdown else l for l in lines)


def plot(results, path):
    """One bar group per shape (forward+backward, log scale), one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads_list = sorted({r["threads"] for r in results["layers"] + results["clip"]})
    impls = results["meta"]["config"]["impls"]
    cimpls = results["meta"]["config"]["clip_impls"]
    med = {
        (r["threads"], r["case"], r["op"], r["impl"]): r["median_ms"]
        for r in results["layers"] + results["clip"]
    }
    colors = {
        "fastrnn": "#1f77b4",
        "reference": "#ff7f0e",
        "torch": "#2ca02c",
        "torch_loop": "#98df8a",
        "floor": "#7f7f7f",
    }
    has_clip = bool(results["clip"])
    fig, axes = plt.subplots(
        len(threads_list),
        2 if has_clip else 1,
        squeeze=False,
        figsize=(16 if has_clip else 13, 4.8 * len(threads_list)),
        gridspec_kw={"width_ratios": [5, 1] if has_clip else [1]},
    )
    for row, threads in enumerate(threads_list):
        groups = [
            (c, "fwdbwd")
            for c in dict.fromkeys(
                r["case"]
                for r in results["layers"]
                if r["threads"] == threads and r["op"] == "fwdbwd"
            )
        ]
        panels = [(axes[row][0], groups, impls, "forward+backward")]
        if has_clip:
            cg = [
                (c, "clip")
                for c in dict.fromkeys(
                    r["case"] for r in results["clip"] if r["threads"] == threads
                )
            ]
            panels.append((axes[row][1], cg, cimpls, "clip_grads"))
        for ax, groups, names, title in panels:
            width = 0.8 / max(1, len(names))
            for j, impl in enumerate(names):
                xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(groups))]
                ys = [med.get((threads, c, op, impl), np.nan) for c, op in groups]
                ax.bar(xs, ys, width, label=impl, color=colors.get(impl))
            ax.set_yscale("log")
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels(
                [
                    c.replace("clip ", "").replace(" N", "\nN", 1).replace(" D", "\nD")
                    for c, _ in groups
                ],
                fontsize=7,
            )
            ax.set_ylabel("ms per call (median)")
            ax.set_title(f"{title}, threads={threads}")
            ax.grid(axis="y", alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper left", framealpha=0.6)
    fig.tight_layout()
    try:
        atomic_write_to(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
