//! A grid's report: reads the finished runs (`crate::collect`), judges the claims
//! (`crate::claims`), and writes report.md, summary.json and the plots into the grid's `out_dir`.

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::collect::{summarize, Curves, PASS_CURVE, STEP_CURVES};
use crate::experiment::{ExperimentSpec, RunRecord, RunSpec, RUN_DONE_FILE};
use crate::plot::{band_series, draw, Chart};
use crate::summary::{PassAtKStat, Stat, Summary, VariantSummary, BASE_NAME};

/// Reads the finished runs and writes report.md, summary.json and plots into `out_dir`.
pub fn write_report(spec: &ExperimentSpec, command: &str) -> Result<Summary> {
    let mut variants = Vec::new();
    // variant -> metric -> per-seed series, for the plots
    let mut curves: BTreeMap<String, Curves> = BTreeMap::new();
    for run in &spec.runs {
        let cells = spec.seeds.iter().map(|&s| (s, spec.run_dir(run, s)));
        let (v, c) = summarize(run, cells)?;
        variants.push(v);
        curves.insert(run.name.clone(), c);
    }
    // The base cells, where they exist (older experiments and pass@k-free grids have none).
    let base_run = RunSpec {
        name: BASE_NAME.into(),
        preset: spec
            .runs
            .first()
            .map(|r| r.preset.clone())
            .unwrap_or_default(),
        group: BASE_NAME.into(),
        set: Vec::new(),
    };
    let (base, base_curves) =
        summarize(&base_run, spec.seeds.iter().map(|&s| (s, spec.base_dir(s))))?;
    let base = (!base.seeds.is_empty()).then_some(base);
    let grid = spec.grid();
    let summary = Summary {
        verdict_method: crate::claims::method_note(grid, &variants, base.as_ref()),
        verdicts: crate::claims::judge(grid, &variants, base.as_ref()),
        variants,
        base,
    };

    std::fs::create_dir_all(&spec.out_dir)?;
    std::fs::write(
        spec.out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let plot_files = draw_plots(spec, &curves, &base_curves)?;
    let md = render_markdown(spec, &summary, command, &plot_files);
    std::fs::write(spec.out_dir.join("report.md"), md)?;
    Ok(summary)
}

/// Per group: each step curve (mean +- std over seeds) and pass@k against k with the base.
fn draw_plots(
    spec: &ExperimentSpec,
    curves: &BTreeMap<String, Curves>,
    base_curves: &Curves,
) -> Result<Vec<PathBuf>> {
    let plots_dir = spec.out_dir.join("plots");
    let mut plot_files = Vec::new();
    for group in first_appearances(spec.runs.iter().map(|r| r.group.as_str())) {
        let runs = || spec.runs.iter().filter(move |r| r.group == group);
        for (metric, title) in STEP_CURVES {
            let series_list: Vec<_> = runs()
                .filter_map(|r| {
                    let s = band_series(&r.name, curves.get(&r.name)?.get(metric)?);
                    (!s.points.is_empty()).then_some(s)
                })
                .collect();
            if series_list.is_empty() {
                continue;
            }
            let chart = Chart {
                title: format!("{title} ({group}; mean +- std over seeds)"),
                x_label: "step".into(),
                y_label: metric.into(),
                series: series_list,
            };
            let stem = plots_dir.join(format!("{group}_{}", crate::plot::file_stem(metric)));
            plot_files.extend(draw(&chart, &stem)?);
        }
        // pass@k against k after training, the base model first for reference.
        let series_list: Vec<_> = std::iter::once((BASE_NAME, base_curves))
            .chain(runs().filter_map(|r| Some((r.name.as_str(), curves.get(&r.name)?))))
            .filter_map(|(name, c)| {
                let s = band_series(name, c.get(PASS_CURVE)?);
                (!s.points.is_empty()).then_some(s)
            })
            .collect();
        // The base alone says nothing about the group.
        if series_list.iter().any(|s| s.label != BASE_NAME) {
            let chart = Chart {
                title: format!("held-out pass@k ({group}; mean +- std over seeds)"),
                x_label: "log2 k".into(),
                y_label: "pass@k".into(),
                series: series_list,
            };
            plot_files.extend(draw(&chart, &plots_dir.join(format!("{group}_pass_at_k")))?);
        }
    }
    Ok(plot_files)
}

fn fmt_pct(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.1} +- {:.1}", 100.0 * s.mean, 100.0 * s.std)
    })
}

fn fmt_signed_pct(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:+.1} +- {:.1}", 100.0 * s.mean, 100.0 * s.std)
    })
}

fn fmt_num(s: &Option<Stat>, digits: usize) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.d$} +- {:.d$}", s.mean, s.std, d = digits)
    })
}

/// The pass@k table: one row per variant that measured it, the base model first; empty when
/// none did (older runs).
fn render_pass_at_k(spec: &ExperimentSpec, summary: &Summary) -> String {
    let rows: Vec<(&VariantSummary, &PassAtKStat)> = summary
        .base
        .iter()
        .chain(&summary.variants)
        .filter_map(|v| Some((v, v.pass_at_k.as_ref()?)))
        .collect();
    let Some(n) = rows.iter().map(|(_, p)| p.n).max() else {
        return String::new();
    };
    let mut ks: Vec<usize> = rows
        .iter()
        .flat_map(|(_, p)| p.pass_at_k.iter().map(|x| x.0))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let mut md = format!(
        "## pass@k\n\nEach held-out problem sampled {n} times at T = 1 after training; the \
         unbiased pass@k and avg@{n} in percent, mean +- std over seeds. `{BASE_NAME}` is {}, \
         measured the same way.\n\n\
         | run | group | seeds | avg@{n} |",
        match spec.shared_warmup {
            true => "the starting model after the warm-up",
            false => "the starting model",
        }
    );
    for k in &ks {
        md.push_str(&format!(" pass@{k} |"));
    }
    md.push_str(&format!("\n|---|---|---|---|{}\n", "---|".repeat(ks.len())));
    for (v, p) in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} |",
            v.name,
            v.group,
            v.seeds.len(),
            fmt_pct(&Some(p.avg_at_n))
        ));
        for k in &ks {
            let stat = p.pass_at_k.iter().find(|x| x.0 == *k).map(|x| x.1);
            md.push_str(&format!(" {} |", fmt_pct(&stat)));
        }
        md.push('\n');
    }
    md.push('\n');
    md
}

/// What the grid trains on, for the title: the data file its runs' configs name, with its
/// directory (`chain_sum/train.jsonl`), else the built-in task.
fn task_name(summary: &Summary) -> String {
    let variants = summary.variants.iter().chain(summary.base.iter());
    let Some(data) = variants.filter_map(|v| v.data.as_deref()).next() else {
        return "the built-in task".to_string();
    };
    let path = std::path::Path::new(data);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
    let dir = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned());
    match (dir, file) {
        (Some(d), Some(f)) => format!("`{d}/{f}`"),
        (None, Some(f)) => format!("`{f}`"),
        _ => format!("`{data}`"),
    }
}

/// Which builds made the finished cells (their records' `popo`), when any cell recorded one: a
/// grid made over several sessions may mix them.
fn builds(spec: &ExperimentSpec) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let dirs = spec.seeds.iter().flat_map(|&s| spec.seed_cells(s));
    for rec in dirs.filter_map(|d| RunRecord::read(&d).ok().flatten()) {
        *counts.entry(rec.popo).or_default() += 1;
    }
    if counts.keys().all(|b| b.is_empty()) {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(b, n)| match b.is_empty() {
            true => format!("{n} recorded none (made before builds were recorded)"),
            false => format!("`{b}` made {n}"),
        })
        .collect();
    format!("Builds of the finished cells: {}.\n\n", parts.join("; "))
}

/// The title, how to regenerate, the shared settings, the wall time and the cells not run.
fn render_header(spec: &ExperimentSpec, summary: &Summary, command: &str) -> String {
    let mut md = format!("# POPO vs baselines on {}\n\n", task_name(summary));
    md.push_str(&format!(
        "Regenerate with:\n\n```\n{command}\n```\n\nSeeds: {:?}. Shared overrides: {}.\n\n",
        spec.seeds,
        if spec.set.is_empty() {
            "none".to_string()
        } else {
            format!("`{}`", spec.set.join("`, `"))
        }
    ));
    let walls = |v: &mut dyn Iterator<Item = &VariantSummary>| -> (usize, f64) {
        v.filter_map(|v| v.wall_s)
            .fold((0, 0.0), |(n, t), s| (n + s.n, t + s.mean * s.n as f64))
    };
    let (runs, run_s) = walls(&mut summary.variants.iter());
    let (bases, base_s) = walls(&mut summary.base.iter());
    if runs + bases > 0 {
        let total = run_s + base_s;
        let cells = if bases > 0 {
            format!("{runs} trained runs and {bases} base cells")
        } else {
            format!("{runs} trained runs")
        };
        md.push_str(&format!(
            "Wall time: {cells}, {:.0} s ({:.1} h) in all (setup, evaluations{} included); \
             per run in the `wall s / run` columns.\n\n",
            total,
            total / 3600.0,
            match spec.shared_warmup {
                true => " and the seed's shared warm-up in its first cell",
                false => "",
            }
        ));
    }
    md.push_str(&builds(spec));
    let split = split_starts(summary);
    if !split.is_empty() {
        md.push_str(&format!(
            "**Starts that differ within a seed.** The variants of a seed should all start from \
             one model, which is what pairing by seed relies on. These did \
             not, so their paired comparisons mix starting points (a run made on another \
             machine, whose kernels round differently, is the usual cause): {}.\n\n",
            split.join("; ")
        ));
    }
    // Cells of the grid with no finished record: what the report does not cover.
    let missing: Vec<String> = spec
        .runs
        .iter()
        .flat_map(|r| spec.seeds.iter().map(move |&s| (r, s)))
        .filter(|&(r, s)| !spec.run_dir(r, s).join(RUN_DONE_FILE).exists())
        .map(|(r, s)| format!("{} s{s}", r.name))
        .collect();
    if !missing.is_empty() {
        md.push_str(&format!(
            "Not run ({} of {} trained cells; the same command runs them, finished ones are \
             skipped): {}.\n\n",
            missing.len(),
            spec.runs.len() * spec.seeds.len(),
            missing.join(", ")
        ));
    }
    md
}

/// Seeds whose finished runs (base cell included) record different held-out accuracies before
/// training, each written as `seed S: name A%, name B%, ...`; empty when every seed has one start.
fn split_starts(summary: &Summary) -> Vec<String> {
    let mut by_seed: std::collections::BTreeMap<u64, Vec<(&str, f64)>> = Default::default();
    for v in summary.base.iter().chain(&summary.variants) {
        for x in &v.per_seed {
            if let Some(a) = x.accuracy_before {
                by_seed.entry(x.seed).or_default().push((&v.name, a));
            }
        }
    }
    by_seed
        .into_iter()
        .filter(|(_, runs)| runs.iter().any(|&(_, a)| (a - runs[0].1).abs() > 1e-9))
        .map(|(seed, runs)| {
            let list: Vec<String> = runs
                .iter()
                .map(|(n, a)| format!("{n} {:.1}%", 100.0 * a))
                .collect();
            format!("seed {seed}: {}", list.join(", "))
        })
        .collect()
}

/// Each group once, in the order of its first run: a grid may interleave groups (GRPO, its
/// learning rates, RAFT, its learning rates), and each group's table and plots hold all its runs.
fn first_appearances<'a>(groups: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for g in groups {
        if !seen.contains(&g) {
            seen.push(g);
        }
    }
    seen
}

/// One group's table (the ablations start with full POPO, for reference).
fn render_group(summary: &Summary, g: &str) -> String {
    let mut md = format!(
        "## {g}\n\nAccuracy in percent (mean +- std over seeds); `last 3 evals` is the mean of \
         each run's last three held-out evaluations (the verdicts' endpoint). The probe columns \
         are mean per-token log-prob changes of held-out negatives / positives across an \
         optimizer step; rollout (sampling) and update (forwards, backward, optimizer) seconds \
         are summed over a run's steps.\n\n\
         | run | preset | overrides | seeds | accuracy before | accuracy after | last 3 evals | \
         change (points) | delta_neg | delta_pos | tokens backprop / step | rollout s / run | \
         update s / run | wall s / run |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let reference = summary
        .variants
        .iter()
        .filter(|v| g == "ablations" && v.name == "popo" && v.group != g);
    for v in reference.chain(summary.variants.iter().filter(|v| v.group == g)) {
        let overrides = if v.overrides.is_empty() {
            "-".to_string()
        } else {
            format!("`{}`", v.overrides.join(", "))
        };
        md.push_str(&format!(
            "| {} | {} | {overrides} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            v.name,
            v.preset,
            v.seeds.len(),
            fmt_pct(&v.accuracy_before),
            fmt_pct(&v.accuracy_after),
            fmt_pct(&v.accuracy_last3),
            fmt_signed_pct(&v.accuracy_change),
            fmt_num(&v.delta_neg, 4),
            fmt_num(&v.delta_pos, 4),
            fmt_num(&v.tokens_backprop_per_step, 0),
            fmt_num(&v.rollout_s, 0),
            fmt_num(&v.train_s, 0),
            fmt_num(&v.wall_s, 1),
        ));
    }
    md.push('\n');
    md
}

/// Each run's held-out accuracy, final / endpoint, per seed: the numbers the paired
/// comparisons difference.
fn render_per_seed(spec: &ExperimentSpec, summary: &Summary) -> String {
    if summary.variants.iter().all(|v| v.per_seed.is_empty()) {
        return String::new();
    }
    let mut md = format!(
        "## Per seed\n\nHeld-out accuracy of each run in percent: final evaluation / endpoint \
         (mean of the last three evaluations); the start is {}, shared by the seed's \
         runs.\n\n| run |",
        spec.grid().start()
    );
    for s in &spec.seeds {
        md.push_str(&format!(" seed {s} |"));
    }
    md.push_str(&format!(
        "\n|---|{}\n| start |",
        "---|".repeat(spec.seeds.len())
    ));
    let start = summary.base.as_ref().or(summary.variants.first());
    for s in &spec.seeds {
        let v = start.and_then(|v| v.per_seed.iter().find(|x| x.seed == *s));
        let cell = v.and_then(|x| x.accuracy_before);
        md.push_str(&format!(
            " {} |",
            cell.map_or("-".into(), |a| format!("{:.1}", 100.0 * a))
        ));
    }
    md.push('\n');
    let one = |x: Option<f64>| x.map_or("-".into(), |a| format!("{:.1}", 100.0 * a));
    for v in &summary.variants {
        md.push_str(&format!("| {} |", v.name));
        for s in &spec.seeds {
            let cell = v
                .per_seed
                .iter()
                .find(|x| x.seed == *s)
                .map_or("-".into(), |x| {
                    format!("{} / {}", one(x.accuracy_after), one(x.accuracy_last3))
                });
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push('\n');
    md
}

fn render_markdown(
    spec: &ExperimentSpec,
    summary: &Summary,
    command: &str,
    plots: &[PathBuf],
) -> String {
    let mut md = render_header(spec, summary, command);
    if !summary.verdicts.is_empty() {
        md.push_str(&format!(
            "## Verdicts\n\nEach claim judged on the finished runs. {}\n\n",
            summary.verdict_method
        ));
        for v in &summary.verdicts {
            md.push_str(&format!("- {v}\n"));
        }
        md.push('\n');
    }
    for g in first_appearances(summary.variants.iter().map(|v| v.group.as_str())) {
        md.push_str(&render_group(summary, g));
    }
    md.push_str(&render_per_seed(spec, summary));
    md.push_str(&render_pass_at_k(spec, summary));
    if !plots.is_empty() {
        md.push_str("## Plots\n\n");
        for p in plots
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        {
            let rel = p.strip_prefix(&spec.out_dir).unwrap_or(p);
            md.push_str(&format!("![{}]({})\n\n", rel.display(), rel.display()));
        }
    }
    md
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
