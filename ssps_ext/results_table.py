"""A results table (markdown, CSV) from the ``verification.json`` of runs.

Usage::

    python -m ssps_ext.results_table results/simclr/1717 results/simclr_ssps/1717 \\
        [--names SimCLR,SimCLR-SSPS] [--csv results.csv] [--md results.md]

Each argument is a run folder (its ``verification.json`` is read) or a JSON
file. One row per system and trial list: EER %, minDCF at p_target 0.01 and
0.05, the number of trials, and the EER % of each score-normalisation variant
present in any run (``score_norm`` of ``ssps_ext.verification.evaluate_trials``;
"-" where a run has none). A JSON with a ``lists`` mapping (trial-list name ->
metrics) gives one row per list. System names default to the run folder's
name, prefixed by its parent when it is only a number (``results/<system>/<seed>``).
The markdown table is printed; the CSV keeps the values unrounded.
For means over seeds of ``run_mini.py`` runs see ``seed_summary.py``.
"""

import argparse
import csv
import json
import os

# ssps_ext.score_norm.normalised_scores keys -> column label, in column order
VARIANTS = {"mean": "mean-norm", "z": "Z-norm", "t": "T-norm", "s": "S-norm", "as": "AS-norm"}
COLUMNS = ["system", "trial list", "EER %", "minDCF0.01", "minDCF0.05", "n_trials"]
METRICS = ["EER", "minDCF_0.01", "minDCF_0.05", "n_trials"]  # json keys of COLUMNS[2:]


def results_file(path):
    """``path`` itself, or the ``verification.json`` of a run folder."""
    file = os.path.join(path, "verification.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} not found: not a run folder with verification.json, nor a results file")
    return file


def default_name(path):
    """Run folder name; ``parent/name`` when the name is only a seed number."""
    folder = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.path.abspath(path)
    name = os.path.basename(folder)
    return f"{os.path.basename(os.path.dirname(folder))}/{name}" if name.isdigit() else name


def rows_of(system, result, file):
    """One row dict per trial list of one ``verification.json`` content."""
    lists = result.get("lists") or {os.path.basename(result.get("trials_file", "")) or "-": result}
    rows = []
    for trial_list, metrics in lists.items():
        missing = [k for k in METRICS if k not in metrics]
        if missing:
            raise KeyError(f"{file}: list {trial_list!r} has no {', '.join(missing)}")
        variants = {k: v["EER"] for k, v in (metrics.get("score_norm") or {}).items()
                    if isinstance(v, dict) and "EER" in v}
        rows.append({"system": system, "trial list": trial_list, **{k: metrics[k] for k in METRICS},
                     "score_norm": variants})
    return rows


def read_rows(paths, names=None):
    """Rows of every run, in argument order (``names`` replace the defaults)."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs")
    rows = []
    for k, path in enumerate(paths):
        file = results_file(path)
        with open(file) as f:
            try:
                result = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}: not valid JSON ({e})") from None
        rows += rows_of(names[k] if names else default_name(path), result, file)
    return rows


def variant_columns(rows):
    """Score-norm variants present in any row: known ones first, in VARIANTS order."""
    present = {v for r in rows for v in r["score_norm"]}
    return [v for v in VARIANTS if v in present] + sorted(present - set(VARIANTS))


def table(rows):
    """Header and cell values (unrounded; None where a variant is absent)."""
    variants = variant_columns(rows)
    header = COLUMNS + [f"{VARIANTS.get(v, v)} EER %" for v in variants]
    body = [[r["system"], r["trial list"], *(r[k] for k in METRICS), *(r["score_norm"].get(v) for v in variants)]
            for r in rows]
    return header, body


def markdown_table(header, body):
    """Markdown lines of a table whose cells are already strings.

    Example
    -------
    >>> markdown_table(["system", "EER %"], [["simclr", "6.30"]])
    ['| system | EER % |', '|---|---|', '| simclr | 6.30 |']
    """
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in body]


def _cell(column, value):
    if value is None:
        return "-"
    if column.startswith("minDCF"):
        return f"{value:.3f}"
    if column.endswith("EER %"):
        return f"{value:.2f}"
    return str(value)


def to_markdown(rows):
    header, body = table(rows)
    return "\n".join(markdown_table(header, [[_cell(c, v) for c, v in zip(header, r)] for r in body]))


def write_csv(rows, path):
    header, body = table(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in r] for r in body])


def main(argv=None):
    """CLI entry point; returns the markdown text."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or verification.json files")
    parser.add_argument("--names", help="comma-separated system names, one per run")
    parser.add_argument("--csv", help="also write the table as CSV")
    parser.add_argument("--md", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.runs, args.names.split(",") if args.names else None)
    except (OSError, KeyError, ValueError) as e:
        raise SystemExit(f"results_table: {e.args[0] if isinstance(e, KeyError) else e}")
    text = to_markdown(rows)
    print(text)
    if args.csv:
        write_csv(rows, args.csv)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
