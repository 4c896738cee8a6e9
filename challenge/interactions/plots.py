"""The trade-off plot of interactions runs: interaction sparsity vs reconstruction."""

from __future__ import annotations

from pathlib import Path

from challenge.results import Result


def plot_tradeoff(results: list | dict | Result, path: str | Path, threshold: float = 0.01) -> None:
    """Interaction sparsity vs reconstruction, one point per lambda (mean over layers), from
    ``InteractionsResult``s or their ``results.json`` documents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from challenge.plots import save_figure

    if not isinstance(results, list):
        results = [results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for res in results:
        doc = res.to_json() if isinstance(res, Result) else res
        per_lambda = doc.get("detail", doc)["per_lambda"]  # also the pre-Result layout
        ents = sorted(per_lambda.values(), key=lambda e: e["lambda"])
        nl = len(doc["provenance"]["layers"])
        lab = (
            f"{nl} layers"
            if nl > 3
            else "layers " + ",".join(map(str, doc["provenance"]["layers"]))
        )
        for ax, key, name in (
            (axes[0], f"nnz@{threshold:g}", f"nonzeros/active feature (|J|>{threshold:g})"),
            (axes[1], "mass90", "edges holding 90% of |J| mass"),
        ):
            xs = [e["mean"][key] for e in ents]
            for ykey, mk in (("fvu_chain", "o-"), ("fvu_out", "s--"), ("fvu_in", "^:")):
                ys = [e["mean"][ykey] for e in ents]
                ax.plot(xs, ys, mk, label=f"{ykey} ({lab})")
                if ykey == "fvu_chain":
                    for x, y, e in zip(xs, ys, ents, strict=True):
                        ax.annotate(f"λ={e['lambda']:g}", (x, y), fontsize=7)
            ax.set_xlabel(name)
            ax.set_ylabel("held-out FVU (mean over layers)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Jacobian-sparse dictionaries: interaction sparsity vs reconstruction")
    save_figure(fig, path, dpi=120)
